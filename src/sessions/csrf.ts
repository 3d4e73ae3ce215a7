/**
 * CSRF defence for the cookie-carried endpoints (refresh, logout). The refresh cookie
 * is SameSite=Strict already; these checks are the second and third layer (OWASP
 * CSRF Prevention Cheat Sheet):
 * - POST with `Content-Type: application/json` only: a cross-site HTML form cannot send
 *   that type without a CORS preflight, which we never grant;
 * - `Origin` must be this origin or an allowed one (`null` and absence refused: a
 *   cookie request from a browser always carries it on POST);
 * - `Sec-Fetch-Site: cross-site` is refused outright (Fetch Metadata).
 * Pure: the HTTP layer passes the header values in and maps the error to a reply.
 */
import { ErrorCode, GatewayError } from '../errors.js'

type CookieRequestCode = typeof ErrorCode.methodNotAllowed | typeof ErrorCode.unsupportedMediaType | typeof ErrorCode.csrfOrigin | typeof ErrorCode.csrfFetchSite

export class CookieRequestError extends GatewayError {
  // not useless: it narrows `code` and `statusCode` to the four outcomes
  // eslint-disable-next-line @typescript-eslint/no-useless-constructor
  constructor (code: CookieRequestCode, statusCode: 405 | 415 | 403, message: string) {
    super(code, statusCode, message)
  }
}

export interface CookieRequestHeaders {
  method: string
  contentType?: string | undefined
  origin?: string | undefined
  secFetchSite?: string | undefined
  /** the Host this request was sent to (after trusted-proxy handling) */
  host?: string | undefined
  /** 'https' or 'http' (after trusted-proxy handling) */
  proto?: string | undefined
}

export interface CsrfOptions {
  /** origins allowed besides the gateway's own, e.g. https://app.example.test */
  allowedOrigins: readonly string[]
}

export type CookieRequestResult = { ok: true } | { ok: false, error: CookieRequestError }

/** scheme://host[:port] with default ports dropped and lowercased, or undefined if not an origin */
export function normalizeOrigin (value: string): string | undefined {
  try {
    const u = new URL(value)
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return undefined
    return u.origin
  } catch {
    return undefined
  }
}

/** JSON only; a charset parameter is allowed and must be UTF-8 (RFC 8259 §8.1) */
export function isJsonContentType (contentType: string | undefined): boolean {
  if (contentType === undefined) return false
  const [type, ...params] = contentType.split(';').map((s) => s.trim().toLowerCase())
  if (type !== 'application/json') return false
  return params.every((p) => p === '' || /^charset="?utf-8"?$/.test(p))
}

/** builds the check once at boot (origins normalized once, not per request) */
export function createCookieRequestCheck (opts: CsrfOptions): (req: CookieRequestHeaders) => CookieRequestResult {
  const allowed = new Set<string>()
  for (const o of opts.allowedOrigins) {
    const n = normalizeOrigin(o)
    if (n === undefined) throw new TypeError(`allowedOrigins: ${JSON.stringify(o)} is not an http(s) origin`)
    allowed.add(n)
  }
  return (req) => checkCookieRequestWith(req, allowed)
}

export function checkCookieRequest (req: CookieRequestHeaders, opts: CsrfOptions): CookieRequestResult {
  return createCookieRequestCheck(opts)(req)
}

function checkCookieRequestWith (req: CookieRequestHeaders, allowed: ReadonlySet<string>): CookieRequestResult {
  if (req.method.toUpperCase() !== 'POST') {
    return { ok: false, error: new CookieRequestError('method_not_allowed', 405, 'only POST is allowed') }
  }
  if (!isJsonContentType(req.contentType)) {
    return { ok: false, error: new CookieRequestError('unsupported_media_type', 415, 'the body must be application/json') }
  }
  const origin = req.origin === undefined || req.origin === 'null' ? undefined : normalizeOrigin(req.origin)
  const self = req.host === undefined || req.host === '' ? undefined : normalizeOrigin(`${req.proto ?? 'https'}://${req.host}`)
  if (origin === undefined || !(allowed.has(origin) || origin === self)) {
    return { ok: false, error: new CookieRequestError('csrf_origin', 403, 'the request origin is not allowed') }
  }
  if (req.secFetchSite?.toLowerCase() === 'cross-site') {
    return { ok: false, error: new CookieRequestError('csrf_fetch_site', 403, 'cross-site requests are not allowed') }
  }
  return { ok: true }
}
