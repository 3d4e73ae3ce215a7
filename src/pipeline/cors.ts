import type { CorsConfig } from '../config/types.js'
import { ErrorCode, GATEWAY_ERROR_HEADER, GatewayError } from '../errors.js'

/**
 * The CORS stage (Fetch standard, "CORS protocol"), answered before authentication: a
 * preflight carries no credentials, so it must never need a token, and it is never proxied.
 *
 * Written here rather than with @fastify/cors, which was evaluated: its per-route switch
 * reads the Fastify route's config, but proxied routes live in one RouteTable behind one
 * catch-all route; it registers its own `OPTIONS *` route, which would take OPTIONS away
 * from upstreams that serve it; its options are merged per request (object spreads on the
 * hot path); and a config reload must swap the CORS policy together with the routes.
 *
 * Rules: only listed origins are reflected (never `*` with credentials: refused at boot);
 * `Vary: Origin` on every response of a CORS route, allowed origin or not, so a cache never
 * serves one origin's answer to another; upstream `Access-Control-*` headers are replaced
 * by the gateway's on these routes (proxy/response-headers.ts); `portcullis-error` is
 * exposed whatever `exposeHeaders` says.
 */
export class CorsPolicy {
  readonly #origins: ReadonlySet<string>
  readonly #anyOrigin: boolean
  readonly #credentials: boolean
  readonly #expose: string
  readonly #allowHeaders: string
  readonly #maxAge: string

  constructor (config: CorsConfig) {
    this.#origins = new Set(config.origins)
    this.#anyOrigin = config.anyOrigin
    this.#credentials = config.credentials
    // always exposed: a cross-origin app cannot tell the gateway's refusals from an upstream's without it
    const expose = config.exposeHeaders.some(h => h.toLowerCase() === GATEWAY_ERROR_HEADER) ? config.exposeHeaders : [...config.exposeHeaders, GATEWAY_ERROR_HEADER]
    this.#expose = expose.join(', ')
    this.#allowHeaders = config.allowHeaders.join(', ')
    this.#maxAge = String(config.maxAgeSec)
  }

  /**
   * The CORS response headers for a request with this Origin, as a flat [name, value, …]
   * list; only `Vary` when the origin is absent or not allowed.
   */
  headers (origin: string | undefined): string[] {
    if (origin === undefined || !this.#allows(origin)) return ['vary', 'Origin']
    const out = ['vary', 'Origin', 'access-control-allow-origin', this.#anyOrigin && !this.#credentials ? '*' : origin]
    if (this.#credentials) out.push('access-control-allow-credentials', 'true')
    out.push('access-control-expose-headers', this.#expose)
    return out
  }

  /** the answer to a preflight: 204 with the allowed methods and headers, or 403 for an origin not listed */
  preflight (origin: string, allowMethods: string): string[] {
    if (!this.#allows(origin)) throw new GatewayError(ErrorCode.corsRejected, 403, 'this origin may not call this route')
    const out = this.headers(origin)
    out.push('access-control-allow-methods', allowMethods, 'access-control-allow-headers', this.#allowHeaders, 'access-control-max-age', this.#maxAge)
    return out
  }

  #allows (origin: string): boolean {
    return this.#anyOrigin || this.#origins.has(origin)
  }
}

/** a CORS preflight: OPTIONS with an Origin and Access-Control-Request-Method */
export function isPreflight (method: string, headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  return method === 'OPTIONS' && typeof headers.origin === 'string' && headers['access-control-request-method'] !== undefined
}
