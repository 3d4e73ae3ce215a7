import type { FastifyRequest } from 'fastify'

/**
 * The part of undici's internal Request that its diagnostics channels hand out and that is
 * documented for instrumentation (undici docs, "Diagnostics Channel"): origin, method, path,
 * the headers as a flat [name, value, name, value …] array, and addHeader().
 */
export interface UndiciRequest {
  readonly origin: string | URL
  readonly method: string
  readonly path: string
  headers: Array<string | string[]>
  addHeader: (name: string, value: string) => unknown
}

/**
 * One request the gateway sent upstream for a proxied request (a retry after a stale
 * keep-alive socket is a second call). Observers read the timings and keep what they need
 * here: one object per call, nothing else allocated per call by the telemetry.
 */
export class UpstreamCall {
  /** the client's request this call serves */
  readonly request: FastifyRequest
  /** the route's name when the call was made */
  readonly route: string
  readonly origin: string
  readonly method: string
  readonly #undici: UndiciRequest
  /** performance.now() when undici created the request (it may still queue for a connection in its client) */
  readonly startedAt: number
  /** performance.now() at the response headers; 0 until then */
  headersAt = 0
  /** the upstream's status; 0 until the response headers */
  statusCode = 0
  ended = false
  /** the tracing observer's client span (src/telemetry/tracing.ts); undefined when tracing is off */
  span: unknown = undefined

  constructor (request: FastifyRequest, undici: UndiciRequest, startedAt: number) {
    this.request = request
    this.route = request.auth?.route ?? ''
    this.#undici = undici
    this.origin = typeof undici.origin === 'string' ? undici.origin : undici.origin.origin
    this.method = undici.method
    this.startedAt = startedAt
  }

  /**
   * Sets a header on the upstream request, replacing every copy the client's request carried
   * (the rewriter passes unknown headers through, so a client's `traceparent` is there).
   * Called from `undici:request:create`, before undici writes anything.
   */
  setHeader (name: string, value: string): void { setHeader(this.#undici, name, value) }

  removeHeader (name: string): void { removeHeader(this.#undici, name) }
}

/** `name` (lower case) set to `value` on an upstream request, every other copy removed */
export function setHeader (undici: UndiciRequest, name: string, value: string): void {
  const headers = undici.headers
  let found = false
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i] !== name) continue
    if (found) { headers.splice(i, 2); i -= 2; continue }
    headers[i + 1] = value
    found = true
  }
  if (!found) undici.addHeader(name, value)
}

/** every copy of `name` (lower case) removed from an upstream request */
export function removeHeader (undici: UndiciRequest, name: string): void {
  const headers = undici.headers
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i] === name) headers.splice(i, 2)
  }
}

/** the value of a header in undici's flat array (names as the rewriter wrote them: lower case) */
export function headerValue (headers: ReadonlyArray<string | string[]>, name: string): string | undefined {
  // the gateway's own headers (x-request-id, identity) come last: search from the end
  for (let i = headers.length - 2; i >= 0; i -= 2) {
    if (headers[i] === name) {
      const value = headers[i + 1]
      return typeof value === 'string' ? value : undefined
    }
  }
  return undefined
}
