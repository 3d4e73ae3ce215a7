import diagnostics from 'node:diagnostics_channel'
import { performance } from 'node:perf_hooks'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import { CLIENT_CLOSED_STATUS } from '../proxy/errors.js'
import { kUpgrade } from '../proxy/websocket.js'
import { headerValue, UpstreamCall, type UndiciRequest } from './upstream-call.js'

/**
 * The observers of the public listener's requests in one place: the decision log, the
 * metrics and the tracing share one onResponse and one onRequestAbort hook per app, whatever
 * number of observers there are, so a second observer costs its own work only.
 *
 * Tracing also follows each upstream call (its span, its traceparent), with no change in the
 * proxy (src/proxy/exchange.ts): undici publishes `undici:request:create | headers | trailers
 * | error` for every request it makes, and the gateway's upstream requests are recognised by
 * their `x-request-id`, which the header rewriter always sets to the request's id
 * (pipeline/headers.ts, rule 7). Correlating by id rather than by AsyncLocalStorage also holds
 * for a request that queued in the pool behind busy connections: undici creates it later,
 * from another request's callback, where an async context would name the wrong request.
 * Requests undici makes for anything else (JWKS fetches) carry no id of an in-flight request
 * and are ignored. The channels are subscribed only by an observer that needs them (tracing):
 * undici builds its messages only while someone listens. The metrics' upstream figures are
 * reported by the proxy itself (UpstreamTiming), which costs a clock read.
 */
export interface RequestObserver {
  /** the response is complete, or the client went away first (aborted; status 499); `nowMs`: performance.now() then, read once for every observer */
  requestDone?: (request: FastifyRequest, status: number, aborted: boolean, nowMs: number) => void
  /** an upstream request for a proxied request was created; it may still set headers (`call.setHeader`) */
  upstreamStart?: (call: UpstreamCall) => void
  upstreamHeaders?: (call: UpstreamCall) => void
  /** the response ended (error undefined) or failed, once per call */
  upstreamEnd?: (call: UpstreamCall, error: Error | undefined) => void
  /**
   * an upstream request of a proxied request that cannot be told apart from another in flight
   * with the same id (a client's x-request-id): no UpstreamCall, but its headers may still be
   * changed (tracing: the client's trace headers never go upstream as they came)
   */
  upstreamUnattributed?: (undici: UndiciRequest) => void
}

const CHANNELS = ['undici:request:create', 'undici:request:headers', 'undici:request:trailers', 'undici:request:error'] as const
const kCall = Symbol('portcullis.upstreamCall')
const kTelemetry = Symbol('portcullis.telemetry')
/** two requests in flight share an id (a client's x-request-id): neither can be told apart upstream */
const AMBIGUOUS = Symbol('portcullis.ambiguousRequestId')

const UNTRACKED = 0
const TRACKED = 1
const DONE = 2

type CallCarrier = UndiciRequest & { [kCall]?: UpstreamCall }

export class TelemetryHub {
  readonly #observers: RequestObserver[] = []
  readonly #upstream: RequestObserver[] = []
  /** proxied requests in flight by id, so an upstream request can be matched to its client request */
  readonly #inflight = new Map<string, FastifyRequest | typeof AMBIGUOUS>()
  /** how many requests in flight share an ambiguous id */
  readonly #shared = new Map<string, number>()
  readonly #subscriptions: Array<[string, (message: unknown) => void]> = []
  readonly #app: FastifyInstance
  #hooked = false

  constructor (app: FastifyInstance) {
    this.#app = app
    // a field of every request from the start: set later, it gave each request a second shape
    app.decorateRequest(kTelemetry, UNTRACKED)
    app.addHook('onClose', (_app, done) => { this.#unsubscribe(); done() })
  }

  /** adds an observer; hooks and channel subscriptions are added with the first one that needs them */
  add (observer: RequestObserver): void {
    this.#observers.push(observer)
    if (!this.#hooked) this.#hook()
    const upstream = observer.upstreamStart !== undefined || observer.upstreamHeaders !== undefined || observer.upstreamEnd !== undefined ||
      observer.upstreamUnattributed !== undefined
    if (upstream) {
      if (this.#upstream.length === 0) this.#subscribe()
      this.#upstream.push(observer)
    }
  }

  /** observers added (tests: tracing off adds none) */
  get observers (): number { return this.#observers.length }

  /** proxied requests in flight (tests: nothing is left behind) */
  get inflight (): number { return this.#inflight.size }

  #hook (): void {
    this.#hooked = true
    const app = this.#app
    app.addHook('onResponse', (request, reply, done) => { this.finish(request, reply.statusCode, false); done() })
    // a client that left before its response was complete (nginx's 499, as the decision log)
    app.addHook('onRequestAbort', (request, done) => { this.finish(request, CLIENT_CLOSED_STATUS, true); done() })
  }

  /** the onResponse / onRequestAbort work (public for bench/micro-metrics.ts) */
  finish (request: FastifyRequest, status: number, aborted: boolean): void {
    const state = request[kTelemetry]
    if (state === DONE) return
    request[kTelemetry] = DONE
    if (state === TRACKED) this.#untrack(request)
    const observers = this.#observers
    const nowMs = performance.now()
    for (let i = 0; i < observers.length; i++) observers[i]!.requestDone?.(request, status, aborted, nowMs)
  }

  /** the preHandler work for a request about to be forwarded (public for bench/micro-metrics.ts) */
  track (request: FastifyRequest): void {
    request[kTelemetry] = TRACKED
    const id = request.id
    const prev = this.#inflight.get(id)
    if (prev === undefined) { this.#inflight.set(id, request); return }
    this.#inflight.set(id, AMBIGUOUS)
    this.#shared.set(id, (this.#shared.get(id) ?? 1) + 1)
  }

  #untrack (request: FastifyRequest): void {
    const id = request.id
    const current = this.#inflight.get(id)
    if (current === request) { this.#inflight.delete(id); return }
    if (current !== AMBIGUOUS) return
    const left = (this.#shared.get(id) ?? 1) - 1
    if (left > 0) { this.#shared.set(id, left); return }
    this.#shared.delete(id)
    this.#inflight.delete(id)
  }

  #subscribe (): void {
    this.#app.addHook('preHandler', (request, _reply, done) => {
      // only requests about to be forwarded; WebSockets go upstream through `ws`, not undici
      if (request.passed !== undefined && (request.raw as { [kUpgrade]?: unknown })[kUpgrade] === undefined) this.track(request)
      done()
    })
    const handlers: Record<typeof CHANNELS[number], (message: unknown) => void> = {
      'undici:request:create': (message) => { this.#created((message as { request: CallCarrier }).request) },
      'undici:request:headers': (message) => {
        const m = message as { request: CallCarrier, response: { statusCode: number } }
        const call = m.request[kCall]
        // 1xx (103 Early Hints) are not the response
        if (call === undefined || m.response.statusCode < 200) return
        call.headersAt = performance.now()
        call.statusCode = m.response.statusCode
        const observers = this.#upstream
        for (let i = 0; i < observers.length; i++) observers[i]!.upstreamHeaders?.(call)
      },
      'undici:request:trailers': (message) => { this.#ended((message as { request: CallCarrier }).request[kCall], undefined) },
      'undici:request:error': (message) => {
        const m = message as { request: CallCarrier, error: Error }
        this.#ended(m.request[kCall], m.error)
      },
    }
    for (const name of CHANNELS) {
      diagnostics.subscribe(name, handlers[name])
      this.#subscriptions.push([name, handlers[name]])
    }
  }

  #unsubscribe (): void {
    for (const [name, handler] of this.#subscriptions) diagnostics.unsubscribe(name, handler)
    this.#subscriptions.length = 0
  }

  #created (undici: CallCarrier): void {
    if (this.#inflight.size === 0 || !Array.isArray(undici.headers)) return
    const id = headerValue(undici.headers, 'x-request-id')
    if (id === undefined) return
    const request = this.#inflight.get(id)
    if (request === undefined) return
    const observers = this.#upstream
    if (request === AMBIGUOUS) {
      for (let i = 0; i < observers.length; i++) observers[i]!.upstreamUnattributed?.(undici)
      return
    }
    const call = new UpstreamCall(request, undici, performance.now())
    undici[kCall] = call
    for (let i = 0; i < observers.length; i++) observers[i]!.upstreamStart?.(call)
  }

  #ended (call: UpstreamCall | undefined, error: Error | undefined): void {
    // undici may report an error after the end (an abort racing the last chunk): once per call
    if (call === undefined || call.ended) return
    call.ended = true
    const observers = this.#upstream
    for (let i = 0; i < observers.length; i++) observers[i]!.upstreamEnd?.(call, error)
  }
}

const hubs = new WeakMap<FastifyInstance['server'], TelemetryHub>()

/** The hub of a public listener (one per app, made on first use; add observers before the app is ready). */
export function telemetryHub (app: FastifyInstance): TelemetryHub {
  let hub = hubs.get(app.server)
  if (hub === undefined) {
    hub = new TelemetryHub(app)
    hubs.set(app.server, hub)
  }
  return hub
}

declare module 'fastify' {
  interface FastifyRequest {
    [kTelemetry]: typeof UNTRACKED | typeof TRACKED | typeof DONE
  }
}
