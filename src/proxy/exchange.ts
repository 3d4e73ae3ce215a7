import type { IncomingHttpHeaders, IncomingMessage, ServerResponse } from 'node:http'
// the module's binding, not the global: globalThis.performance is an accessor, read through a
// global-load IC on every call (~15 ns a call, 5–7 calls a request; bench/icount.ts)
import { performance } from 'node:perf_hooks'
import type { Http2ServerRequest } from 'node:http2'
import type { Socket } from 'node:net'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Dispatcher } from 'undici'
import type { GatewayError } from '../errors.js'
import type { HeaderRewriter, RequestFacts } from '../pipeline/headers.js'
import type { UpstreamPool } from './pools.js'
import type { BodyBudget } from './body-budget.js'
import type { UpstreamPath } from './upstream-path.js'
import { Reason } from '../pipeline/auth-state.js'
import { closeAfterAnswer } from '../pipeline/edge.js'
import { earlyHintsHeaders, responseHeaderList, trailerHeaders, transferCodingRefused, writableHeaderList, type ResponseRules } from './response-headers.js'
import { BodyTooLargeError, CLIENT_CLOSED_STATUS, ClientGoneError, gatewayBusy, payloadTooLarge, reportUnfinished, requestTimedOut, upstreamBusy, upstreamError, upstreamErrorCode, UpstreamTimeoutError, UpstreamTransferCodingError } from './errors.js'

// 103 Early Hints relayed per exchange: hints are optional, and an upstream sending them
// without end must not fill the gateway's memory with writes a client does not read
const MAX_EARLY_HINTS = 2
// a request without a body that met a stale keep-alive socket is sent again, once; the same
// methods are the safe ones a pipelined request may be forwarded with at once (start())
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
const STALE_SOCKET = new Set(['UND_ERR_SOCKET', 'ECONNRESET'])
/** what holding one chunk of a body read whole costs besides its bytes: a Buffer (~100 bytes of heap) on its own allocation */
const CHUNK_COST_BYTES = 256
/** a body's chunks under this size are copied together (#readWhole), larger ones kept as they came */
const SMALL_CHUNK_BYTES = 4096

/** on a client connection: the unsafe requests waiting for the responses before theirs (dispatchInTurn) */
const kWaitingInTurn = Symbol('portcullis.waitingInTurn')

/** set by the server's checkContinue listener: the client waits for 100 Continue before its body */
export const kExpectsContinue = Symbol('portcullis.expectsContinue')

/**
 * What the proxy reports of each upstream call (the metrics' upstream histograms and error
 * counter): the exchange is where these moments are known, so they cost a clock read each.
 * Seconds from the moment the request was handed to the pool (queueing included).
 */
export interface UpstreamTiming {
  upstreamHeaders: (route: string, sec: number) => void
  upstreamDone: (route: string, sec: number) => void
  upstreamFailed: (route: string, code: string) => void
}

/** What forwarding a route's requests needs, built once per configuration. */
export interface UpstreamTarget {
  /** the route's name (metric labels) */
  route: string
  origin: string
  pool: UpstreamPool
  path: UpstreamPath
  /** from accepting the request to the upstream's response headers */
  timeoutMs: number
  /** longest gap between upstream body chunks */
  idleTimeoutMs: number
  queueLimit: number
  maxBodyBytes: number
  /**
   * routes[].requestBuffering: a body is read whole, counted in this budget
   * (server.requestBufferBytes), before the request takes an upstream connection; undefined:
   * streamed as it arrives
   */
  bodyBudget: BodyBudget | undefined
  /** the Host header for the upstream; undefined: the client's (preserveHost) */
  upstreamHost: string | undefined
  /** a client that does not read for this long is dropped */
  writeTimeoutMs: number
  rewriter: HeaderRewriter
  responseRules: ResponseRules
  timing: UpstreamTiming | undefined
}

/** what the pipeline learned about the request that forwarding needs */
export interface ForwardContext {
  facts: RequestFacts
  /** the gateway's CORS headers ([name, value, …]); undefined: not a CORS route */
  cors: readonly string[] | undefined
}

/**
 * The proxy stage: forwards one authorized request on the route's pool. Throws (before
 * anything is sent upstream) 413 for a declared body over the route's limit and 503
 * upstream_busy when the route's queue is full.
 */
export function forward (target: UpstreamTarget, request: FastifyRequest, reply: FastifyReply, ctx: ForwardContext): void {
  new Exchange(target, request, reply, ctx).start()
}

/**
 * One request in flight, as undici's dispatch handler: the upstream's status and headers
 * are written to the client response as they arrive, then the body chunk by chunk with
 * backpressure both ways; trailers and 103 Early Hints are relayed.
 *
 * Timing (issue 8, item 7 — slow clients must not stall an upstream for everyone):
 * - the route timeout runs from the moment the gateway accepted the request, so time spent
 *   queued for a connection counts (undici's own headersTimeout starts only once a request
 *   has a socket);
 * - between body chunks the route's idleTimeout applies (undici bodyTimeout), so SSE and long
 *   polls are not cut at the route timeout;
 * - a client that stops reading for server.writeTimeout is disconnected, which aborts the
 *   upstream request and frees its connection (undici pauses its body timer while we pause);
 * - a client that sends its body slowly holds no upstream connection: on a route with
 *   requestBuffering the body is read whole first (#readWhole).
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #target: UpstreamTarget
  readonly #request: FastifyRequest
  readonly #reply: FastifyReply
  readonly #res: ServerResponse
  readonly #ctx: ForwardContext
  readonly #options: Dispatcher.DispatchOptions
  /** a request without a body that met a stale keep-alive socket may be sent once more */
  #retryable: boolean
  #controller: Dispatcher.DispatchController | undefined = undefined
  #headersTimer: NodeJS.Timeout | undefined = undefined
  #writeTimer: NodeJS.Timeout | undefined = undefined
  /** response headers written to the client */
  #started = false
  /** the client has its answer (or is gone): nothing more is written */
  #done = false
  /** undici still owns the request (counted in the pool) */
  #dispatched = false
  /** a 'drain' listener resumes the upstream body (added the first time the client falls behind) */
  #drainHeard = false
  /** when the request was handed to the pool (performance.now) */
  #sentAt = 0
  /** 103 Early Hints relayed so far */
  #hints = 0
  /** the body is being read whole before forwarding (routes[].requestBuffering) */
  #reading = false
  /** bytes of the body read whole, counted in the budget until given back (#release) */
  #heldBytes = 0

  constructor (target: UpstreamTarget, request: FastifyRequest, reply: FastifyReply, ctx: ForwardContext) {
    this.#target = target
    this.#request = request
    this.#reply = reply
    this.#res = reply.raw
    this.#ctx = ctx
    const raw = request.raw
    const body = requestBody(raw, target.maxBodyBytes)
    this.#retryable = body === null && IDEMPOTENT.has(request.method)
    this.#options = {
      origin: target.origin,
      path: target.path.map(request.url),
      method: request.method as Dispatcher.HttpMethod,
      headers: target.rewriter.requestList(raw.headers, ctx.facts) as string[],
      // undici streams an async iterable body like a Readable (counted bodies, below)
      body: body as IncomingMessage | null,
      // the route timeout is ours (from acceptance); between body chunks: the idle timeout
      headersTimeout: 0,
      bodyTimeout: target.idleTimeoutMs,
    }
  }

  start (): void {
    const pool = this.#target.pool
    if (pool.inFlight >= pool.connections + this.#target.queueLimit) throw upstreamBusy()
    const now = performance.now()
    const remainingMs = this.#target.timeoutMs - (now - this.#request.acceptedAt)
    if (remainingMs <= 0) throw upstreamError(new UpstreamTimeoutError())
    // whole milliseconds: Node keeps one timer list per distinct duration, and a fractional
    // one (a new value for every request) costs a list of its own each time
    this.#headersTimer = setTimeout(() => { this.#timedOut() }, Math.ceil(remainingMs))
    // 'close' fires once; `on` spares the wrapper `once` allocates per request
    this.#res.on('close', () => { if (!this.#done) this.#clientGone() })
    // only now, authorized and about to be forwarded, is the client told to send its body
    if ((this.#request.raw as { [kExpectsContinue]?: boolean })[kExpectsContinue] === true && this.#options.body !== null) {
      this.#res.writeContinue()
    }
    const budget = this.#target.bodyBudget
    if (budget !== undefined && this.#options.body !== null) {
      this.#readWhole(budget)
      return
    }
    this.#forward(now)
  }

  #forward (now: number): void {
    // HTTP/1.1 pipelining: Node gives a response its socket only once the responses before it
    // on the connection have finished. RFC 9112 §9.3.2 allows pipelined requests to run in
    // parallel only when all are safe: an unsafe one waits for its turn, as nginx reads the next
    // request only after finishing the current one — a POST pipelined behind a GET ran upstream
    // while the GET streamed, and its answer was lost when that stream broke
    // (fix-pipelined-unsafe-runs-early). The one check on every request: a socket is assigned
    // (over HTTP/2 always; Node's getter returns the stream's socket proxy, made once a stream).
    if (this.#res.socket === null && !IDEMPOTENT.has(this.#request.method)) {
      this.#dispatchInTurn()
      return
    }
    this.#dispatch(now)
  }

  /**
   * routes[].requestBuffering: the body is read whole — up to the route's maxBodyBytes (413),
   * within the process's server.requestBufferBytes (503 gateway_busy) — before the request
   * takes an upstream connection or a place in the route's queue. A client trickling its body
   * held an upstream connection until server.requestTimeout (30 s by default): a few hundred
   * such clients, anonymous on a public route, took a route's whole pool and everyone else got
   * 503 upstream_busy (fix-slow-body-holds-upstream; nginx's proxy_request_buffering). A body
   * not whole within the route's timeout is the client's delay: 408 request_timeout. The
   * request's own stream is read (listeners, not an async iterator, whose early return would
   * destroy the socket before the refusal is written); its declared length is not trusted, the
   * bytes are counted.
   */
  #readWhole (budget: BodyBudget): void {
    const req = this.#request.raw
    const maxBytes = this.#target.maxBodyBytes
    // Large chunks are kept as Node handed them over (each already a copy of its own), nothing
    // copied again: one buffer grown by doubling for the whole body cost the 1 MB bench twice
    // bare's CPU (allocations and copies). Small chunks — a trickle, a body in one-byte chunks —
    // are copied into a tail buffer grown by doubling instead: kept one by one, each would hold a
    // Buffer (~100 bytes of heap on an allocation of its own) per byte. What is counted is what is
    // held: a kept chunk's bytes (or the buffer it is a slice of) plus CHUNK_COST_BYTES, a tail's
    // capacity plus the same once
    const chunks: Buffer[] = []
    let length = 0
    let tail: Buffer | undefined
    let tailLength = 0
    const seal = (): void => {
      if (tail === undefined) return
      chunks.push(tail.subarray(0, tailLength))
      tail = undefined
      tailLength = 0
    }
    this.#reading = true
    const stop = (): void => {
      this.#reading = false
      req.removeListener('data', onData)
      req.removeListener('end', onEnd)
      req.removeListener('error', onError)
      req.pause()
    }
    const onData = (chunk: Buffer): void => {
      if (this.#done) { stop(); return }
      if (length + chunk.length > maxBytes) { stop(); this.#fail(payloadTooLarge()); return }
      if (chunk.length >= SMALL_CHUNK_BYTES) {
        // over HTTP/2 a chunk is a slice of the TLS read it came in (up to 16 KiB), which it keeps
        const cost = Math.max(chunk.length, chunk.buffer.byteLength) + CHUNK_COST_BYTES
        if (!budget.take(cost)) { stop(); this.#fail(gatewayBusy()); return }
        this.#heldBytes += cost
        seal()
        chunks.push(chunk)
      } else {
        const needed = tailLength + chunk.length
        const had = tail?.length ?? 0
        if (needed > had) {
          const capacity = Math.min(maxBytes, Math.max(needed, 2 * had))
          const cost = capacity - had + (tail === undefined ? CHUNK_COST_BYTES : 0)
          if (!budget.take(cost)) { stop(); this.#fail(gatewayBusy()); return }
          this.#heldBytes += cost
          // not from Buffer's shared pool: a small slice of it would keep its whole 8 KiB slab.
          // Only the bytes written here are ever sent (seal: the subarray up to tailLength)
          const grown = Buffer.allocUnsafeSlow(capacity)
          tail?.copy(grown, 0, 0, tailLength)
          tail = grown
        }
        chunk.copy(tail as Buffer, tailLength)
        tailLength = needed
      }
      length += chunk.length
    }
    const onEnd = (): void => {
      stop()
      if (this.#done) return
      // with its length (a chunked or HTTP/2 body had none): the upstream gets a framed body, not chunks
      if (req.headers['content-length'] === undefined) (this.#options.headers as string[]).push('content-length', String(length))
      seal()
      // (undici sends an iterable of chunks like a stream, its types say Readable)
      this.#options.body = chunks.length <= 1 ? chunks[0] ?? null : chunks as unknown as IncomingMessage
      // the route's queue may have filled while the body came
      const pool = this.#target.pool
      if (pool.inFlight >= pool.connections + this.#target.queueLimit) { this.#fail(upstreamBusy()); return }
      // outside Fastify's handler now: a throw here would be nobody's
      try {
        this.#forward(performance.now())
      } catch (err) {
        this.#fail(upstreamError(err as Error))
      }
    }
    // the client went away mid-body ('close' on the response reports it too)
    const onError = (): void => { stop(); if (!this.#done) this.#clientGone() }
    req.on('data', onData)
    req.on('end', onEnd)
    req.on('error', onError)
  }

  /** the buffered body's bytes leave the budget once the upstream has answered, or nothing will be sent */
  #release (): void {
    if (this.#heldBytes === 0) return
    // held only on a route that has a budget (start(): #readWhole)
    this.#target.bodyBudget?.give(this.#heldBytes)
    this.#heldBytes = 0
  }

  /** forwarded once the responses before this one on the connection have finished; never if it closes first */
  #dispatchInTurn (): void {
    const socket = this.#request.raw.socket as Socket & { [kWaitingInTurn]?: Set<() => void> }
    if (socket.destroyed) { this.#clientGone(); return }
    // one 'close' listener per connection, however many requests wait on it
    let waiting = socket[kWaitingInTurn]
    if (waiting === undefined) {
      const all = waiting = socket[kWaitingInTurn] = new Set()
      socket.once('close', () => { for (const gone of all) gone() })
    }
    const gone = (): void => { if (!this.#done) this.#clientGone() }
    waiting.add(gone)
    // ServerResponse.assignSocket: emitted when the response before it finished
    this.#res.once('socket', () => {
      waiting.delete(gone)
      if (!this.#done) this.#dispatch(performance.now())
    })
  }

  #dispatch (now: number): void {
    this.#dispatched = true
    this.#sentAt = now
    this.#target.pool.inFlight++
    this.#target.pool.dispatcher.dispatch(this.#options, this)
  }

  #settled (): void {
    this.#release()
    if (!this.#dispatched) return
    this.#dispatched = false
    this.#target.pool.inFlight--
  }

  #timedOut (): void {
    this.#headersTimer = undefined
    if (this.#started || this.#done) return
    // still reading a buffered body: the client is slow, not the upstream
    if (this.#reading) { this.#fail(requestTimedOut()); return }
    this.#fail(upstreamError(new UpstreamTimeoutError()))
    this.#controller?.abort(new UpstreamTimeoutError())
  }

  #clientGone (): void {
    this.#done = true
    this.#clearTimers()
    this.#release()
    const gone = new ClientGoneError()
    this.#controller?.abort(gone)
    this.#unfinished(CLIENT_CLOSED_STATUS, Reason.clientClosed, gone)
  }

  /** the response will not complete (the client left, or the upstream broke off mid-body) */
  #unfinished (status: number, reason: string, cause: Error): void {
    reportUnfinished(this.#request, this.#res, status, reason, cause)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    // a request that timed out or lost its client while it queued is dropped as it leaves the queue
    if (this.#done || this.#res.destroyed) controller.abort(new ClientGoneError())
    else this.#controller = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) {
      // 103 Early Hints reach the client; 100 Continue was the gateway's to answer
      if (statusCode === 103 && !this.#done && this.#hints < MAX_EARLY_HINTS && !this.#res.writableNeedDrain && !http10(this.#request.raw)) {
        this.#hints++
        // Node writes a 103 only with a valid Link; hints are optional, so a bad one is dropped
        try { this.#res.writeEarlyHints(earlyHintsHeaders(headers, { paths: this.#target.path, cors: this.#ctx.cors })) } catch {}
      }
      return
    }
    this.#target.timing?.upstreamHeaders(this.#target.route, (performance.now() - this.#sentAt) / 1000)
    if (this.#done) { controller.abort(new ClientGoneError()); return }
    // a long response (SSE after a POST) does not keep its request's body counted
    this.#release()
    clearTimeout(this.#headersTimer)
    this.#headersTimer = undefined
    const te = headers['transfer-encoding']
    if (te !== undefined && te !== 'chunked' && transferCodingRefused(te)) {
      // response-headers.ts rule 12. Answered first, then aborted: undici destroys the
      // connection, whose remaining bytes are in a coding nobody here reads
      const err = new UpstreamTransferCodingError()
      this.#fail(upstreamError(err))
      controller.abort(err)
      return
    }
    const list = responseHeaderList(this.#target.responseRules, statusCode, headers, {
      requestId: this.#request.id,
      paths: this.#target.path,
      cors: this.#ctx.cors,
    })
    const raw = this.#request.raw
    // the client's body was not all read: the connection cannot carry another request
    // (HTTP/1 only: HTTP/2 has no connection header, and a stream ends on its own)
    if (!raw.complete && raw.httpVersionMajor === 1) {
      list.push('connection', 'close')
      closeAfterAnswer(raw)
    }
    const http2 = raw.httpVersionMajor === 2
    // a Trailer field needs a chunked HTTP/1 response (response-headers.ts rule 11)
    const trailerRefused = headers.trailer !== undefined && !http2 && (statusCode === 204 || statusCode === 205 || statusCode === 304 ||
      this.#request.method === 'HEAD' || raw.httpVersionMinor === 0 || headers['content-length'] !== undefined)
    try {
      this.#res.writeHead(statusCode, (http2 || trailerRefused ? writableHeaderList(list, trailerRefused, http2) : list) as string[])
    } catch (err) {
      // Node refused a header the upstream sent; nothing was written yet, but Node may have
      // changed the response before it threw (the status line's reason, "no body", the
      // headers stored so far): undone, so the 502 is whole. Answered first: the abort
      // reaches onResponseError, which must find the exchange done
      resetResponse(this.#res)
      this.#fail(upstreamError(err as Error))
      controller.abort(err as Error)
      return
    }
    this.#started = true
    this.#reply.hijack() // the response is ours now; Fastify still runs the onResponse hooks
    if (statusCode === 204 || statusCode === 304 || this.#request.method === 'HEAD' || statusCode === 205) {
      // RFC 9112 §6.3 (RFC 9110 §15.3.6 for a 205): these end with their header section,
      // whatever Content-Length says.
      // The client has its answer now; undici may still fail the upstream's framing after
      // the fact (a 204 with Content-Length: 5), which then costs only the upstream connection
      this.#done = true
      this.#clearTimers()
      this.#res.end()
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#done) return
    if (!this.#res.write(chunk)) {
      controller.pause()
      // listened for only once a client falls behind: most responses never fill its socket
      if (!this.#drainHeard) {
        this.#drainHeard = true
        this.#res.on('drain', () => {
          clearTimeout(this.#writeTimer)
          this.#writeTimer = undefined
          controller.resume()
        })
      }
      this.#writeTimer ??= setTimeout(() => {
        // the client stopped reading: drop it, which aborts the upstream request
        this.#writeTimer = undefined
        this.#res.destroy()
      }, this.#target.writeTimeoutMs)
    }
  }

  onResponseEnd (_controller: Dispatcher.DispatchController, trailers: IncomingHttpHeaders): void {
    this.#settled()
    this.#target.timing?.upstreamDone(this.#target.route, (performance.now() - this.#sentAt) / 1000)
    if (this.#done) return
    this.#done = true
    this.#clearTimers()
    if (trailers !== undefined) {
      const kept = trailerHeaders(trailers)
      // a trailer Node refuses to write (invalid characters) is dropped with the others: the body is already out
      if (kept !== undefined) try { this.#res.addTrailers(kept) } catch {}
    }
    this.#res.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.#settled()
    this.#target.timing?.upstreamFailed(this.#target.route, upstreamErrorCode(err))
    if (this.#done) return
    if (this.#started || this.#res.destroyed) {
      this.#done = true
      this.#clearTimers()
      const error = upstreamError(err)
      this.#unfinished(error.statusCode, error.code, err)
      this.#res.destroy() // mid-body: the client must see the response break, not a short one
      return
    }
    if (this.#retryable && STALE_SOCKET.has((err as { code?: string }).code ?? '')) {
      this.#retryable = false
      this.#controller = undefined
      this.#dispatch(performance.now())
      return
    }
    this.#fail(err instanceof BodyTooLargeError ? payloadTooLarge(err) : upstreamError(err))
  }

  #fail (error: GatewayError): void {
    this.#done = true
    this.#clearTimers()
    this.#release()
    // answered already: the edge's HTTP/2 408 (plugins/edge.ts) reset the stream under way
    if (this.#res.headersSent) return
    this.#reply.send(error)
  }

  #clearTimers (): void {
    if (this.#headersTimer !== undefined) { clearTimeout(this.#headersTimer); this.#headersTimer = undefined }
    if (this.#writeTimer !== undefined) { clearTimeout(this.#writeTimer); this.#writeTimer = undefined }
  }
}

/**
 * RFC 9110 §15.2: a server MUST NOT send a 1xx to an HTTP/1.0 client, which reads it as the
 * final response (fix-hints-to-http10). Asked only when a 103 arrives.
 */
function http10 (req: IncomingMessage): boolean {
  return req.httpVersionMajor === 1 && req.httpVersionMinor === 0
}

/** what a `writeHead` that threw may have left on a response nothing was written to */
function resetResponse (res: ServerResponse): void {
  for (const name of res.getHeaderNames()) res.removeHeader(name)
  // node:http's own fields (HTTP/1 only; an HTTP/2 response keeps no such state)
  const h1 = res as ServerResponse & { _hasBody?: boolean }
  if (typeof h1._hasBody === 'boolean') {
    h1._hasBody = true
    res.statusMessage = ''
  }
}

/**
 * The body to send upstream: none, the stream as it is when its length is declared (Node's
 * parser ends it at exactly that length), or a counted stream for chunked bodies that fails
 * as soon as it passes the route's limit — before the upstream has seen more than the limit.
 * A GET or HEAD with a body is forwarded like any other, never silently dropped. Over
 * HTTP/2 a body needs no Content-Length and there is no Transfer-Encoding: a request has one
 * unless its HEADERS frame ended the stream (a body sent without a length was forwarded as an
 * empty request, past maxBodyBytes — fix-h2-body-without-length).
 */
function requestBody (req: IncomingMessage, maxBytes: number): IncomingMessage | AsyncIterable<Buffer> | null {
  const length = req.headers['content-length']
  if (length !== undefined) {
    const n = Number(length)
    if (n > maxBytes) throw payloadTooLarge()
    return n === 0 ? null : req
  }
  if (req.httpVersionMajor === 2) return (req as unknown as Http2ServerRequest).stream.endAfterHeaders ? null : capped(req, maxBytes)
  if (req.headers['transfer-encoding'] === undefined) return null
  return capped(req, maxBytes)
}

async function * capped (req: IncomingMessage, maxBytes: number): AsyncIterable<Buffer> {
  let n = 0
  for await (const chunk of req) {
    n += (chunk as Buffer).length
    if (n > maxBytes) throw new BodyTooLargeError()
    yield chunk as Buffer
  }
}
