import { isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Span, type SpanContext, type Tracer } from '@opentelemetry/api'
import { parseTraceParent, TraceState } from '@opentelemetry/core'
import { RandomIdGenerator } from '@opentelemetry/sdk-trace'
import type { FastifyRequest } from 'fastify'
import { Reason } from '../pipeline/auth-state.js'
import type { TrustFunction } from '../pipeline/trust.js'
import type { RequestObserver } from './hub.js'
import { cappedMethod } from './method.js'
import { headerValue, removeHeader, setHeader, type UndiciRequest, type UpstreamCall } from './upstream-call.js'

/**
 * One server span per request and one client span per upstream call, as a RequestObserver of
 * the telemetry hub (src/telemetry/hub.ts). W3C Trace Context: a client's valid `traceparent`
 * (with its `tracestate`) makes the request span its child; the upstream gets a `traceparent`
 * naming the gateway's client span, and the client's `tracestate` — or none when the gateway
 * started the trace (a `tracestate` without a valid `traceparent` belongs to no trace: W3C
 * Trace Context §3.3.1).
 *
 * Sampling is decided here, before OpenTelemetry is asked for anything: `sampleRatio` decides,
 * and a client's trace is continued either way. A sampled flag is followed only from a trusted
 * proxy (`server.trustProxy`, whose tracing made the decision upstream of us): from anyone else
 * it would let a client trace every request it sends — ~16 µs of span work and two exported
 * spans each at any `sampleRatio`, a flood a client chooses — or keep its requests out of the
 * traces (fix-client-sampling-flag).
 * An unsampled request costs no span at all (OTel would build two non-recording ones, ~3 µs,
 * bench/micro-metrics.ts): a client's trace reaches the upstream with the client's span as
 * parent (the gateway recorded nothing) and flags 00, and one the gateway starts goes out with
 * new ids and flags 00, so the upstream does not sample it either.
 *
 * Whatever the decision, the trace headers the upstream gets are the gateway's own writing,
 * never the client's bytes (fix-trace-headers-passed-raw): `traceparent` is written as version
 * 00 from the parsed ids — a later version is read for the fields version 00 defines and its
 * tail dropped (§3.2.4), and an invalid one restarts the trace — and `tracestate` is what
 * OpenTelemetry's TraceState keeps of the client's (the same value the exported spans carry):
 * valid list members only, at most 32 of them and 512 characters (§3.3), none when nothing is
 * left. Both headers came raw before: a 6 KB future-version tail and 200 garbage members went
 * upstream as sent. `baggage` (W3C Baggage) is not the gateway's to read: like any header the
 * rewriter does not reserve, it passes as the client sent it, bounded by the header size limit.
 *
 * Attributes are fixed identifiers the gateway chose (route, method, status, decision reason,
 * request id, the upstream's host and port) — never a URL with its query, a header value, a
 * token or a cookie: the span leaves the gateway for a collector with other access rules.
 * A method is one OpenTelemetry knows or `_OTHER` (HTTP semantic conventions: `HTTP` in the
 * span name, the original in `http.request.method_original`, capped), since over HTTP/2 a
 * client sends any token as its method, at any length: 300 made-up methods were 300 span names
 * (fix-h2-method-in-logs).
 */

interface RequestTrace {
  /** undefined: not sampled */
  readonly span: Span | undefined
  /** the context whose span is the request span (parent of the upstream spans) */
  readonly context: Context
  /** the client's trace context (a valid traceparent, its tracestate); undefined: none */
  readonly parent: SpanContext | undefined
  /** not sampled, started here: the trace id the upstream is given (a new span id per call) */
  readonly unsampledTraceId: string | undefined
}

const kTrace = Symbol('portcullis.trace')
const ids = new RandomIdGenerator()

/**
 * OpenTelemetry HTTP semantic conventions, `http.request.method`: the methods of RFC 9110 and
 * PATCH (RFC 5789), case-sensitive; any other is `_OTHER`
 */
const KNOWN_METHODS: ReadonlySet<string> = new Set(['CONNECT', 'DELETE', 'GET', 'HEAD', 'OPTIONS', 'PATCH', 'POST', 'PUT', 'TRACE'])

/** the span name's method and the method attributes of `method` (semantic conventions: `HTTP` and `_OTHER` for one not known) */
function methodOf (method: string): { name: string, attributes: Attributes } {
  if (KNOWN_METHODS.has(method)) return { name: method, attributes: { 'http.request.method': method } }
  return { name: 'HTTP', attributes: { 'http.request.method': '_OTHER', 'http.request.method_original': cappedMethod(method) } }
}

/**
 * A client's trace context from its headers (W3C Trace Context §3.2–3.3): one valid
 * traceparent, or none, with its tracestate
 */
function parentOf (traceparent: unknown, tracestate: unknown): SpanContext | undefined {
  // a repeated traceparent arrives joined with ', ' (Node), which no longer parses: no parent
  if (typeof traceparent !== 'string') return undefined
  const parsed = parseTraceParent(traceparent)
  if (parsed === null) return undefined
  const context: SpanContext = { ...parsed, isRemote: true }
  if (!isSpanContextValid(context)) return undefined // all-zero ids
  // repeated tracestate headers are one list (§3.3.1); TraceState drops malformed members
  if (typeof tracestate === 'string') context.traceState = new TraceState(tracestate)
  else if (Array.isArray(tracestate)) context.traceState = new TraceState(tracestate.join(','))
  return context
}

/**
 * The client's tracestate as the upstream gets it: OpenTelemetry's TraceState keeps the list
 * members whose key and value are valid, at most 32 of them within 512 characters (§3.3), which
 * is what the exported spans carry; undefined when none is left (an empty header is not sent)
 */
function upstreamTraceState (parent: SpanContext | undefined): string | undefined {
  const serialized = parent?.traceState?.serialize()
  return serialized === '' ? undefined : serialized
}

export class RequestTracing implements RequestObserver {
  readonly #tracer: Tracer
  readonly #sampleRatio: number
  readonly #trust: TrustFunction
  /** upstream origin → its host and port attributes */
  readonly #servers = new Map<string, Attributes>()

  /**
   * `tracer`'s provider must record every span it is asked for (AlwaysOn): the decision is
   * taken here. `trust`: server.trustProxy's decision (src/pipeline/trust.ts), whose peers'
   * sampled flags are followed.
   */
  constructor (tracer: Tracer, sampleRatio: number, trust: TrustFunction) {
    this.#tracer = tracer
    this.#sampleRatio = sampleRatio
    this.#trust = trust
  }

  /** the request's trace, decided when first needed: at the first upstream call or when the request ends */
  #requestTrace (request: FastifyRequest): RequestTrace {
    const existing = request[kTrace]
    if (existing !== undefined) return existing
    const parent = parentOf(request.headers.traceparent, request.headers.tracestate)
    const clientSampled = parent !== undefined && (parent.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED
    const followed = parent !== undefined && this.#trust(request.socket.remoteAddress)
    const sampled = followed ? clientSampled : Math.random() < this.#sampleRatio
    let state: RequestTrace
    if (!sampled) {
      state = {
        span: undefined,
        context: ROOT_CONTEXT,
        parent,
        unsampledTraceId: parent === undefined ? ids.generateTraceId() : undefined,
      }
    } else {
      const parentContext = parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent)
      const route = request.auth?.route ?? ''
      const method = methodOf(request.method)
      const span = this.#tracer.startSpan(route === '' ? method.name : `${method.name} ${route}`, {
        kind: SpanKind.SERVER,
        // performance.now() when the gateway accepted the request (plugins/edge.ts)
        startTime: request.acceptedAt > 0 ? request.acceptedAt : undefined,
        attributes: { ...method.attributes, 'portcullis.request_id': request.id },
      }, parentContext)
      state = { span, context: trace.setSpan(parentContext, span), parent, unsampledTraceId: undefined }
    }
    request[kTrace] = state
    return state
  }

  requestDone (request: FastifyRequest, status: number, aborted: boolean): void {
    const { span } = this.#requestTrace(request)
    if (span === undefined) return
    if (span.isRecording()) {
      const auth = request.auth
      span.setAttributes({
        'portcullis.route': auth?.route ?? '',
        'http.response.status_code': status,
        'portcullis.decision.granted': auth?.granted ?? false,
        'portcullis.decision.reason': aborted ? Reason.clientClosed : auth?.reason ?? 'unrouted',
      })
      // OTel HTTP semantic conventions: a server span is an error for 5xx only
      if (status >= 500) span.setStatus({ code: SpanStatusCode.ERROR })
    }
    span.end()
  }

  upstreamStart (call: UpstreamCall): void {
    const state = this.#requestTrace(call.request)
    const client = state.parent
    if (state.span === undefined) {
      // not sampled: the client's trace, version 00 and flags 00 whatever the client wrote, with
      // its span as the parent; or one started here, announced unsampled
      call.setHeader('traceparent', client === undefined
        ? `00-${state.unsampledTraceId}-${ids.generateSpanId()}-00`
        : `00-${client.traceId}-${client.spanId}-00`)
    } else {
      const method = methodOf(call.method)
      const span = this.#tracer.startSpan(method.name, {
        kind: SpanKind.CLIENT,
        attributes: { ...method.attributes, 'portcullis.route': call.route, ...this.#server(call.origin) },
      }, state.context)
      call.span = span
      const sc = span.spanContext()
      call.setHeader('traceparent', `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED ? '01' : '00'}`)
    }
    // parsed when first asked for, here: a refused request never pays for it
    const traceState = upstreamTraceState(client)
    if (traceState === undefined) call.removeHeader('tracestate')
    else call.setHeader('tracestate', traceState)
  }

  /**
   * An upstream request of a request that shares its x-request-id with another in flight (the
   * client chose it): whose it is cannot be told, so it gets no span — but its trace headers are
   * rewritten as for an unsampled request, from its own headers, never passed as they came
   */
  upstreamUnattributed (undici: UndiciRequest): void {
    const parent = parentOf(headerValue(undici.headers, 'traceparent'), headerValue(undici.headers, 'tracestate'))
    if (parent === undefined) {
      removeHeader(undici, 'traceparent')
      removeHeader(undici, 'tracestate')
      return
    }
    setHeader(undici, 'traceparent', `00-${parent.traceId}-${parent.spanId}-00`)
    const traceState = upstreamTraceState(parent)
    if (traceState === undefined) removeHeader(undici, 'tracestate')
    else setHeader(undici, 'tracestate', traceState)
  }

  upstreamHeaders (call: UpstreamCall): void {
    (call.span as Span | undefined)?.setAttribute('http.response.status_code', call.statusCode)
  }

  upstreamEnd (call: UpstreamCall, error: Error | undefined): void {
    const span = call.span as Span | undefined
    if (span === undefined) return
    if (error !== undefined) {
      // the code only: an error message may quote what the upstream or the client sent
      const code = (error as { code?: unknown }).code
      const type = typeof code === 'string' ? code : error.name
      span.setAttribute('error.type', type)
      span.setStatus({ code: SpanStatusCode.ERROR, message: type })
    } else if (call.statusCode >= 400) {
      // for a client span, 4xx is an error too (OTel HTTP semantic conventions)
      span.setAttribute('error.type', String(call.statusCode))
      span.setStatus({ code: SpanStatusCode.ERROR })
    }
    span.end()
  }

  #server (origin: string): Attributes {
    let attributes = this.#servers.get(origin)
    if (attributes === undefined) {
      const url = new URL(origin)
      attributes = {
        'server.address': url.hostname,
        'server.port': url.port === '' ? (url.protocol === 'https:' ? 443 : 80) : Number(url.port),
        'url.scheme': url.protocol.slice(0, -1),
      }
      this.#servers.set(origin, attributes)
    }
    return attributes
  }
}

declare module 'fastify' {
  interface FastifyRequest {
    [kTrace]?: RequestTrace
  }
}
