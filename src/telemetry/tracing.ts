import { isSpanContextValid, ROOT_CONTEXT, SpanKind, SpanStatusCode, trace, TraceFlags, type Attributes, type Context, type Span, type SpanContext, type Tracer } from '@opentelemetry/api'
import { parseTraceParent, TraceState } from '@opentelemetry/core'
import { RandomIdGenerator } from '@opentelemetry/sdk-trace'
import type { FastifyRequest } from 'fastify'
import { Reason } from '../pipeline/auth-state.js'
import type { TrustFunction } from '../pipeline/trust.js'
import type { RequestObserver } from './hub.js'
import type { UpstreamCall } from './upstream-call.js'

/**
 * One server span per request and one client span per upstream call, as a RequestObserver of
 * the telemetry hub (src/telemetry/hub.ts). W3C Trace Context: a client's valid `traceparent`
 * (with its `tracestate`) makes the request span its child; the upstream gets a `traceparent`
 * naming the gateway's client span, and the client's `tracestate` unchanged — or none when
 * the gateway started the trace (a `tracestate` without a valid `traceparent` belongs to no
 * trace: W3C Trace Context §3.3.1).
 *
 * Sampling is decided here, before OpenTelemetry is asked for anything: `sampleRatio` decides,
 * and a client's trace is continued either way. A sampled flag is followed only from a trusted
 * proxy (`server.trustProxy`, whose tracing made the decision upstream of us): from anyone else
 * it would let a client trace every request it sends — ~16 µs of span work and two exported
 * spans each at any `sampleRatio`, a flood a client chooses — or keep its requests out of the
 * traces (fix-client-sampling-flag).
 * An unsampled request costs no span at all (OTel would build two non-recording ones, ~3 µs,
 * bench/micro-metrics.ts): a client's unsampled `traceparent` reaches the upstream as it came
 * (the gateway recorded nothing, so the client's span stays the upstream's parent) — with
 * flags 00 where the client said 01 and was not followed — and one the gateway starts goes
 * out with new ids and flags 00, so the upstream does not sample it either.
 *
 * Attributes are fixed identifiers the gateway chose (route, method, status, decision reason,
 * request id, the upstream's host and port) — never a URL with its query, a header value, a
 * token or a cookie: the span leaves the gateway for a collector with other access rules.
 */

interface RequestTrace {
  /** undefined: not sampled */
  readonly span: Span | undefined
  /** the context whose span is the request span (parent of the upstream spans) */
  readonly context: Context
  /** the client sent a valid traceparent */
  readonly continued: boolean
  /** not sampled, started here: the trace id the upstream is given */
  readonly unsampledTraceId: string | undefined
  /** not sampled, a client's sampled traceparent not followed: what the upstream gets instead (flags 00) */
  readonly declinedParent: string | undefined
}

const kTrace = Symbol('portcullis.trace')
const ids = new RandomIdGenerator()

/** the client's trace context (W3C Trace Context §3.2–3.3): one valid traceparent, or none */
function clientParent (request: FastifyRequest): SpanContext | undefined {
  const header = request.headers.traceparent
  // a repeated traceparent arrives joined with ', ' (Node), which no longer parses: no parent
  if (typeof header !== 'string') return undefined
  const parsed = parseTraceParent(header)
  if (parsed === null) return undefined
  const context: SpanContext = { ...parsed, isRemote: true }
  if (!isSpanContextValid(context)) return undefined // all-zero ids
  const state = request.headers.tracestate
  // repeated tracestate headers are one list (§3.3.1); TraceState drops malformed members
  if (state !== undefined) context.traceState = new TraceState(Array.isArray(state) ? state.join(',') : state)
  return context
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
    const parent = clientParent(request)
    const clientSampled = parent !== undefined && (parent.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED
    const followed = parent !== undefined && this.#trust(request.socket.remoteAddress)
    const sampled = followed ? clientSampled : Math.random() < this.#sampleRatio
    let state: RequestTrace
    if (!sampled) {
      state = {
        span: undefined,
        context: ROOT_CONTEXT,
        continued: parent !== undefined,
        unsampledTraceId: parent === undefined ? ids.generateTraceId() : undefined,
        declinedParent: clientSampled ? `00-${parent.traceId}-${parent.spanId}-00` : undefined,
      }
    } else {
      const parentContext = parent === undefined ? ROOT_CONTEXT : trace.setSpanContext(ROOT_CONTEXT, parent)
      const route = request.auth?.route ?? ''
      const span = this.#tracer.startSpan(route === '' ? request.method : `${request.method} ${route}`, {
        kind: SpanKind.SERVER,
        // performance.now() when the gateway accepted the request (plugins/edge.ts)
        startTime: request.acceptedAt > 0 ? request.acceptedAt : undefined,
        attributes: { 'http.request.method': request.method, 'portcullis.request_id': request.id },
      }, parentContext)
      state = { span, context: trace.setSpan(parentContext, span), continued: parent !== undefined, unsampledTraceId: undefined, declinedParent: undefined }
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
    const parent = this.#requestTrace(call.request)
    if (parent.span === undefined) {
      // not sampled: a client's traceparent (and tracestate) pass as they came, flags 00 where
      // the client asked for sampling and was not followed; a trace started here is announced unsampled
      if (parent.unsampledTraceId !== undefined) {
        call.setHeader('traceparent', `00-${parent.unsampledTraceId}-${ids.generateSpanId()}-00`)
        call.removeHeader('tracestate')
      } else if (parent.declinedParent !== undefined) {
        call.setHeader('traceparent', parent.declinedParent)
      }
      return
    }
    const span = this.#tracer.startSpan(call.method, {
      kind: SpanKind.CLIENT,
      attributes: { 'http.request.method': call.method, 'portcullis.route': call.route, ...this.#server(call.origin) },
    }, parent.context)
    call.span = span
    const sc = span.spanContext()
    call.setHeader('traceparent', `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & TraceFlags.SAMPLED) === TraceFlags.SAMPLED ? '01' : '00'}`)
    if (!parent.continued) call.removeHeader('tracestate')
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
