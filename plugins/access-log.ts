import { performance } from 'node:perf_hooks'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { pino, type Logger } from 'pino'
import { Reason } from '../src/pipeline/auth-state.js'
import { telemetryHub } from '../src/telemetry/hub.js'
import { cappedMethod } from '../src/telemetry/method.js'

/**
 * One structured line per request with the access decision (STYLE habit 9):
 * route, granted, reason, sub, status, ms. Never the token, a cookie or the query string
 * (which may carry secrets). The method is the one sent, cut to 32 characters: over HTTP/2 it
 * is any token, of any length (src/telemetry/method.ts).
 *
 * The line has a fixed shape, so it is serialized by hand and written to the logger's
 * destination (pino's asynchronous, buffered one), not through `log.info(obj)`, which cost
 * several times more per request. Lines are handed over joined, in batches: the destination
 * measures its whole pending buffer on every write (up to 16 KiB, flattened each time), which
 * cost ~20 µs per request when done line by line under load (bench:
 * portcullis-EdDSA-no-decision-log), and each write it passes on is a hand-off to a libuv
 * thread. A line is handed over at the end of its event-loop turn when the last batch left
 * more than BATCH_INTERVAL_MS ago (a quiet gateway: at once), else with the lines of the next
 * few milliseconds (at 15,000 requests/s, ~75 lines a write instead of one to five). Writing
 * a line costs ~2.3 µs alone, ~1.6 µs five at a time, ~0.75 µs 75 at a time
 * (bench/micro-decision-log.ts). The destination is flushed at least every second
 * (src/logger.ts), so a line reaches stdout within a second and a few milliseconds.
 */
// a batch is handed over before it outgrows the destination's 16 KiB write chunks
export const MAX_PENDING_CHARS = 12_288
/** under load, lines wait at most this long to join a batch (tests wait it out) */
export const BATCH_INTERVAL_MS = 5

/**
 * The longest path a decision line carries, in characters; a longer one ends in `…`. A path is
 * the client's (up to ~16 KB): with a slow stdout each such line was kept whole
 * (fix-log-buffer-unbounded); the route, not the tail, is what the line is read for.
 */
export const MAX_LOGGED_PATH_CHARS = 1024
const capped = (path: string): string => path.length > MAX_LOGGED_PATH_CHARS ? path.slice(0, MAX_LOGGED_PATH_CHARS) + '…' : path

/**
 * Lines joined for one write: handed over when they fill MAX_PENDING_CHARS, else by the one
 * timer, no sooner than BATCH_INTERVAL_MS after the write before (at the end of the turn when
 * that is already past). One timer at most is armed: a write of a full batch leaves it armed,
 * and when it fires it re-checks the real clock (a timer counts from the loop's cached clock,
 * which a long turn leaves behind) and waits out the rest. Before, each full batch armed a
 * timer of its own, the ones left over wrote a batch with room left 1–2 ms after a full one
 * (the decision-log suite, once on Node 22), and when they were made to wait instead, each
 * kept re-arming while full batches went on: timers without bound under load (~5 % of CPU
 * per request, bench paired with 0dcf8d3; fix-log-batch-timers).
 */
export class LineBatch {
  #pending = ''
  #armed = false
  #lastWriteAt = -Infinity
  readonly #stream: { write: (s: string) => void }
  constructor (stream: { write: (s: string) => void }) { this.#stream = stream }

  add (line: string, now: number): void {
    this.#pending += line
    if (this.#pending.length >= MAX_PENDING_CHARS) this.flush()
    else if (!this.#armed) this.#arm(this.#lastWriteAt + BATCH_INTERVAL_MS - now)
  }

  flush (): void {
    if (this.#pending === '') return
    this.#lastWriteAt = performance.now()
    const lines = this.#pending
    this.#pending = ''
    this.#stream.write(lines)
  }

  #arm (waitMs: number): void {
    this.#armed = true
    if (waitMs <= 0) setImmediate(this.#due)
    else setTimeout(this.#due, Math.ceil(waitMs)).unref()
  }

  readonly #due = (): void => {
    this.#armed = false
    if (this.#pending === '') return
    const waitMs = this.#lastWriteAt + BATCH_INTERVAL_MS - performance.now()
    if (waitMs > 0) this.#arm(waitMs)
    else this.flush()
  }
}

export default fp(async function accessLog (app, opts: { logger: Logger }) {
  const { logger } = opts
  if (!logger.isLevelEnabled('info')) return
  const stream = (logger as unknown as Record<symbol, { write: (s: string) => void }>)[pino.symbols.streamSym]
  if (stream === undefined) return
  const prefix = `{"level":30,"pid":${process.pid},"msg":"decision","time":`
  const batch = new LineBatch(stream)
  // the last lines reach the destination before the logger is flushed at shutdown
  app.addHook('onClose', (_app, done) => { batch.flush(); done() })

  const line = (request: FastifyRequest, status: number, reason: string | undefined, now: number): void => {
    const auth = request.auth
    const url = request.url
    const q = url.indexOf('?')
    const sub = auth.token?.sub ?? auth.sub
    batch.add(
      prefix + Date.now() +
      ',"reqId":' + JSON.stringify(request.id) +
      ',"route":' + (auth.route === '' ? 'null' : JSON.stringify(auth.route)) +
      ',"granted":' + auth.granted +
      ',"reason":"' + (reason ?? auth.reason) + '"' + // reasons are fixed identifiers
      ',"sub":' + (sub === undefined || sub === '' ? 'null' : JSON.stringify(sub)) +
      // over HTTP/2 the method is any token the client chooses, at any length (fix-h2-method-in-logs)
      ',"method":"' + cappedMethod(request.method) + '"' +
      ',"path":' + JSON.stringify(q === -1 ? capped(url) : capped(url.slice(0, q))) +
      ',"status":' + status +
      ',"ms":' + (Math.round((now - request.acceptedAt) * 100) / 100) + '}\n',
      now
    )
  }

  // one line when the response is complete, or when the client went away first (status 499,
  // as nginx writes it): the telemetry hub's onResponse and onRequestAbort hooks, shared with
  // the metrics, once per request. A proxied response cut short after its request body went
  // upstream is reported by the exchange (src/proxy/exchange.ts #unfinished) through onResponse
  telemetryHub(app).add({
    requestDone (request, status, aborted, nowMs) { line(request, status, aborted ? Reason.clientClosed : undefined, nowMs) },
  })
}, { name: 'portcullis-access-log', fastify: '5.x', dependencies: ['portcullis-edge'] })
