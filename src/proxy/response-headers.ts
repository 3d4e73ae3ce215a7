import { parseCookie } from 'undici'
import { HOP_BY_HOP_RESPONSE as HOP_BY_HOP, connectionNominated } from './hop-by-hop.js'
import { GATEWAY_ERROR_HEADER } from '../errors.js'
import { applyCookieRule, type CookieRule } from './upstream-cookies.js'

/**
 * What an upstream may and may not say to the client, applied to every proxied response.
 * The checklist (reply-from, nginx, Envoy; each rule has a test in test/e2e/edge-checklist.test.ts,
 * the deeper regression tests are named after their cause):
 *
 * 1. hop-by-hop headers (RFC 9110 §7.6.1) and every header the upstream's `Connection`
 *    names are removed; the client connection is the gateway's
 * 2. `x-request-id` is the gateway's, never the upstream's
 * 3. no `Set-Cookie` may set, clear or shadow the refresh cookie: each is parsed as a browser
 *    would (RFC 6265bis §5.6, undici's parser: names trimmed of whitespace, a nameless cookie
 *    — `=name=v`, or `name` with no `=` at all — is its value), compared case-insensitively
 *    (fix-upstream-refresh-cookie)
 * 4. `Clear-Site-Data` is removed: only the gateway may wipe a client's cookies and storage;
 *    so is the obsolete `Set-Cookie2`
 * 5. `Location` under the route's rewritePrefix is moved back under its prefix
 * 6. on a CORS route the gateway's `Access-Control-*` replace the upstream's, and `Origin`
 *    joins its `Vary`
 * 7. `Trailer` passes and the trailers are relayed (RFC 9110 §6.5), minus every field a
 *    trailer may not carry (§6.5.1: framing, routing, authentication, caching, content
 *    metadata) and the rules above (fix-trailers-and-early-hints); `103 Early Hints` are
 *    relayed under the same rules, without Set-Cookie and framing, each Link separately
 *    (Node refuses a comma-joined one). Hints and trailers take rules 1, 2 and 4 from the
 *    final response's own set (NOT_FROM_UPSTREAM), and hints rules 5 and 6 too (the upstream's
 *    `Access-Control-*` dropped on a CORS route): a `Set-Cookie2` and those `Access-Control-*`
 *    passed on hints, a `Set-Cookie2` in trailers (fix-hints-skip-rules, fix-trailers-skip-rules).
 *    Hints: at most two per request, none to a client that is not reading
 *    (fix-response-node-refuses) and none to an HTTP/1.0 client (RFC 9110 §15.2: it reads a
 *    1xx as the final response — fix-hints-to-http10, exchange.ts); `100 Continue` is not
 *    relayed (the gateway answered the client's Expect itself)
 * 8. a header Node refuses to write (invalid characters) fails the exchange with 502; undici
 *    already refuses control characters, obs-fold, bare CR, duplicate or conflicting framing
 *    and header blocks over 16 KiB (502 too), and hands values over as latin1, byte for byte
 * 9. a 204 carries no `Content-Length` (RFC 9110 §8.6: MUST NOT; nginx drops it too), so no
 *    client can read a body into the next response on its connection; a 205 carries
 *    `Content-Length: 0` (RFC 9110 §15.3.6: no content; over HTTP/2 Node ends a 205 at its
 *    headers, and the upstream's `Content-Length: 5` reset the stream — fix-h2-205-with-body)
 * 10. a response to HEAD, a 204, a 205 and a 304 end with their headers (RFC 9112 §6.3,
 *    RFC 9110 §15.3.6), whatever the upstream's framing says or sends after them (exchange.ts)
 * 11. the list is made writable before it is written (writableHeaderList): `Trailer` is
 *    dropped where no trailer can follow (HEAD, 204, 205, 304, HTTP/1.0, Content-Length), and over
 *    HTTP/2 a field Node holds single-valued keeps its first value (SINGLE_VALUE_H2, checked
 *    against Node's own refusals — fix-h2-single-value-fields); should Node still refuse the
 *    list, what it changed before throwing is undone so the 502 is whole
 *    (fix-response-node-refuses)
 * 12. a `Transfer-Encoding` other than a lone `chunked` (`gzip, chunked`; `chunked, gzip`,
 *    which is read until close) fails the exchange with 502 and the upstream connection is
 *    not reused (transferCodingRefused, exchange.ts): the gateway decodes no transfer coding,
 *    and relaying the still-coded bytes as the body is what nginx refuses too ("upstream sent
 *    unknown Transfer-Encoding") — fix-upstream-transfer-coding
 * 13. on a route with `sandbox` (the default) the final response carries
 *    `Content-Security-Policy: sandbox` beside any policy of the upstream's (a browser
 *    enforces every policy it is sent): a page the upstream serves on the gateway's origin —
 *    docs, an upload, an error page with an injected script — runs in an opaque origin with
 *    no script, so it cannot call the cookie-carried auth endpoints as the gateway's own origin
 *    nor read the app's storage (fix-upstream-document-mints-tokens). A route serving the
 *    app's own pages says `sandbox: false`. On every response, not only `text/html`: a browser
 *    sniffs a document out of a missing or wrong Content-Type
 * 14. on a route with `cookies: route` (the default) each `Set-Cookie` is kept under the route's
 *    prefix and host-only (`Path` moved under the prefix, `Domain` removed, a `__Host-` cookie
 *    under a narrower prefix dropped); `drop` removes them all, `pass` leaves them: one
 *    upstream cannot plant cookies that another route's upstream or the auth endpoints receive
 *    (upstream-cookies.ts, fix-upstream-cookie-jar)
 */
export interface ResponseRules {
  /** the refresh cookie name, lower case; undefined when the gateway forwards it (then upstreams own it) */
  refreshCookie: string | undefined
  /** rule 13: the route's answers are sandboxed */
  sandbox: boolean
  /** rule 14: what the upstream's Set-Cookie may do (undefined: pass) */
  cookies: CookieRule
}

export interface ResponseContext {
  requestId: string
  /** maps a Location under the upstream's rewritePrefix back under the route's prefix */
  paths: { location: (value: string) => string }
  /** the gateway's CORS headers for this request ([name, value, …]); undefined: not a CORS route */
  cors: readonly string[] | undefined
}

/**
 * Response headers for the client as a flat `[name, value, …]` list for `writeHead`.
 * `headers` is undici's parsed object (lower-case names); it is read, not changed.
 */
export function responseHeaderList (rules: ResponseRules, statusCode: number, headers: Readonly<Record<string, string | string[] | undefined>>, ctx: ResponseContext): Array<string | string[]> {
  const out: Array<string | string[]> = []
  const nominated = connectionNominated(headers.connection)
  const cors = ctx.cors
  // RFC 9110 §8.6, §15.3.6: a 204 has no Content-Length, a 205 says 0 (pushed below)
  const noLength = statusCode === 204 || statusCode === 205
  let vary: string | string[] | undefined
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || NOT_FROM_UPSTREAM.has(name)) continue
    if (nominated !== undefined && nominated.has(name)) continue
    if (noLength && name === 'content-length') continue
    if (name === 'set-cookie') {
      const kept = applyCookieRule(rules.cookies, keepCookies(rules.refreshCookie, value))
      if (kept.length > 0) out.push(name, kept)
    } else if (name === 'location' && typeof value === 'string') {
      out.push(name, ctx.paths.location(value))
    } else if (cors !== undefined && (name === 'vary' || name.startsWith('access-control-'))) {
      if (name === 'vary') vary = value
    } else {
      out.push(name, value)
    }
  }
  if (cors !== undefined) {
    for (let i = 0; i < cors.length; i += 2) {
      const name = cors[i] as string
      out.push(name, name === 'vary' && vary !== undefined ? mergeVary(vary) : cors[i + 1] as string)
    }
  }
  if (statusCode === 205) out.push('content-length', '0')
  if (rules.sandbox) out.push('content-security-policy', 'sandbox')
  out.push('x-request-id', ctx.requestId)
  return out
}

// what no response from an upstream carries to the client (rules 1, 2, 4): one lookup a field
const NOT_FROM_UPSTREAM: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'x-request-id', 'clear-site-data', 'set-cookie2', GATEWAY_ERROR_HEADER])

/**
 * The same rules for the headers of a 103 Early Hints, in the shape Node's writeEarlyHints
 * takes: the final response's (NOT_FROM_UPSTREAM, Connection-nominated, Location moved back,
 * the upstream's `Access-Control-*` dropped on a CORS route), then what a 1xx cannot carry.
 * The gateway's own CORS headers are not added: a 103 is no resource a CORS check reads (the
 * browser fetches each preload as a request of its own).
 */
export function earlyHintsHeaders (headers: Readonly<Record<string, string | string[] | undefined>>, ctx: Omit<ResponseContext, 'requestId'>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const nominated = connectionNominated(headers.connection)
  const cors = ctx.cors
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || NOT_IN_HINTS.has(name)) continue
    if (nominated !== undefined && nominated.has(name)) continue
    if (cors !== undefined && name.startsWith('access-control-')) continue
    out[name] = name === 'link' ? splitLinks(value) : name === 'location' && typeof value === 'string' ? ctx.paths.location(value) : value
  }
  return out
}

// a 1xx has no body (RFC 9110 §8.6) and sets no state in the client; the final response's rules first
const NOT_IN_HINTS: ReadonlySet<string> = new Set([...NOT_FROM_UPSTREAM, 'set-cookie', 'content-length'])

/**
 * A header list the client's response can actually be written with (rule 11): Node refuses, after it has already changed the response,
 * - a `Trailer` field on an HTTP/1 response that is not chunked (a 204, 205 or 304, an answer to
 *   HEAD, an HTTP/1.0 client, a declared Content-Length): trailers cannot follow it, so the
 *   field is dropped;
 * - over HTTP/2, a second value of a field it holds single-valued (`ETag`, `Location`,
 *   `Content-Type`…, Node's list): the first value is kept, as a browser over HTTP/1.1 would.
 */
export function writableHeaderList (list: Array<string | string[]>, dropTrailer: boolean, http2: boolean): Array<string | string[]> {
  let out: Array<string | string[]> | undefined
  let seen: Set<string> | undefined
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i] as string
    let value = list[i + 1] as string | string[]
    let drop = dropTrailer && name === 'trailer'
    if (http2 && SINGLE_VALUE_H2.has(name)) {
      seen ??= new Set()
      drop = seen.has(name)
      seen.add(name)
      // repeated lines arrive as one field with a list of values
      if (!drop && typeof value !== 'string') {
        value = value[0] ?? ''
        out ??= list.slice(0, i)
      }
    }
    if (drop) out ??= list.slice(0, i)
    else if (out !== undefined) out.push(name, value)
  }
  return out ?? list
}

/**
 * node:http2's single-value fields (lib/internal/http2/util.js kSingleValueHeaders) without the
 * pseudo-headers: Node refuses any of them twice in a response, request fields included (an
 * upstream echoing `User-Agent` or `Range` twice was a 502 — fix-h2-single-value-fields).
 * Node does not export its list; test/e2e/fix-upstream-review.test.ts asks Node about every
 * header name it knows and checks this set is exactly what it refuses.
 */
export const SINGLE_VALUE_H2: ReadonlySet<string> = new Set([
  'access-control-allow-credentials', 'access-control-max-age', 'access-control-request-method', 'age',
  'authorization', 'content-encoding', 'content-language', 'content-length', 'content-location', 'content-md5',
  'content-range', 'content-type', 'date', 'dnt', 'etag', 'expires', 'from', 'host', 'if-match',
  'if-modified-since', 'if-none-match', 'if-range', 'if-unmodified-since', 'last-modified', 'location',
  'max-forwards', 'proxy-authorization', 'range', 'referer', 'retry-after', 'tk', 'upgrade-insecure-requests',
  'user-agent', 'x-content-type-options',
])

/**
 * Rule 12: the upstream's Transfer-Encoding names a coding besides `chunked` (or `chunked`
 * twice, or not last). `te` is undici's value, as the upstream spelled it.
 */
export function transferCodingRefused (te: string | string[]): boolean {
  return typeof te !== 'string' || te.trim().toLowerCase() !== 'chunked'
}

/** `<a>; rel=preload, <b>; rel=preload` → one entry per link (commas inside `<…>` or quotes stay) */
function splitLinks (value: string | string[]): string[] {
  const out: string[] = []
  for (const v of typeof value === 'string' ? [value] : value) {
    let start = 0
    let inUri = false
    let inQuote = false
    for (let i = 0; i < v.length; i++) {
      const c = v[i]
      if (inQuote) {
        if (c === '\\') i++
        else if (c === '"') inQuote = false
      } else if (inUri) {
        if (c === '>') inUri = false
      } else if (c === '<') {
        inUri = true
      } else if (c === '"') {
        inQuote = true
      } else if (c === ',') {
        const link = v.slice(start, i).trim()
        if (link !== '') out.push(link)
        start = i + 1
      }
    }
    const last = v.slice(start).trim()
    if (last !== '') out.push(last)
  }
  return out
}

// RFC 9110 §6.5.1: fields a trailer must not carry (message framing, routing, request
// modifiers, authentication, response control data, payload processing), plus what the
// header rules above keep from clients (from the same set: a Set-Cookie2 trailer passed);
// the rest is the application's (checksums, grpc-status)
const NOT_IN_TRAILERS: ReadonlySet<string> = new Set([
  ...NOT_FROM_UPSTREAM, 'trailer', 'content-length', 'content-type', 'content-encoding', 'content-range', 'content-location',
  'host', 'authorization', 'www-authenticate', 'proxy-authenticate', 'set-cookie', 'cookie',
  'age', 'cache-control', 'expires', 'date', 'location', 'retry-after', 'vary', 'warning', 'pragma',
  'etag', 'last-modified',
])

/** the upstream's response trailers the client may get; undefined when none is left */
export function trailerHeaders (trailers: Readonly<Record<string, string | string[] | undefined>>): Record<string, string> | undefined {
  let out: Record<string, string> | undefined
  for (const name in trailers) {
    const value = trailers[name]
    if (value === undefined || NOT_IN_TRAILERS.has(name) || name.startsWith('access-control-')) continue
    out ??= {}
    out[name] = typeof value === 'string' ? value : value.join(', ')
  }
  return out
}

function mergeVary (upstream: string | string[]): string {
  const v = typeof upstream === 'string' ? upstream : upstream.join(', ')
  return /(^|,)\s*(origin|\*)\s*(,|$)/i.test(v) ? v : `${v}, Origin`
}

/** an upstream must not plant, clear or shadow the gateway's refresh cookie */
export function keepCookies (refreshCookie: string | undefined, value: string | string[]): string[] {
  const list = typeof value === 'string' ? [value] : value
  if (refreshCookie === undefined) return list
  return list.filter(c => !touchesCookie(c, refreshCookie))
}

function touchesCookie (setCookie: string, lowerName: string): boolean {
  // cheap exit: the name must appear in some case
  if (!setCookie.toLowerCase().includes(lowerName)) return false
  const parsed = parseCookie(setCookie)
  // a Set-Cookie the parser refuses is refused by browsers too; dropping it costs nothing
  if (parsed === null) return true
  const name = parsed.name.toLowerCase()
  if (name === lowerName) return true
  if (name !== '') return false
  // a nameless cookie is sent as its bare value: `=__Host-x=v` arrives as `__Host-x=v`, and
  // `__Host-x; Path=/` (no `=` at all: RFC 6265bis §5.6 step 3) as `__Host-x`, which a
  // cookie parser then reads under that name (with the whitespace before `=` trimmed)
  const value = parsed.value.toLowerCase()
  if (!value.startsWith(lowerName)) return false
  const next = value.charCodeAt(lowerName.length)
  return Number.isNaN(next) || next === 61 /* = */ || next === 32 || next === 9
}
