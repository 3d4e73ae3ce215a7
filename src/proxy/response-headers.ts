import { parseCookie } from 'undici'
import { HOP_BY_HOP_RESPONSE as HOP_BY_HOP, connectionNominated } from './hop-by-hop.js'

/**
 * What an upstream may and may not say to the client, applied to every proxied response.
 * The checklist (reply-from, nginx, Envoy; each rule has a test in test/e2e/):
 *
 * 1. hop-by-hop headers (RFC 9110 §7.6.1) and every header the upstream's `Connection`
 *    names are removed; the client connection is the gateway's (fix-connection-nominated)
 * 2. `x-request-id` is the gateway's, never the upstream's
 * 3. no `Set-Cookie` may set, clear or shadow the refresh cookie: each is parsed as a browser
 *    would (RFC 6265bis §5.6, undici's parser: names trimmed of whitespace, a nameless cookie
 *    is its value), compared case-insensitively (fix-upstream-refresh-cookie)
 * 4. `Clear-Site-Data` is removed: only the gateway may wipe a client's cookies and storage
 * 5. `Location` under the route's rewritePrefix is moved back under its prefix
 * 6. on a CORS route the gateway's `Access-Control-*` replace the upstream's, and `Origin`
 *    joins its `Vary`
 * 7. `Trailer` passes and the trailers are relayed (RFC 9110 §6.5); `103 Early Hints` are
 *    relayed, `100 Continue` is not (the gateway answered the client's Expect itself)
 * 8. a header Node refuses to write (invalid characters) fails the exchange with 502
 */
export interface ResponseRules {
  /** the refresh cookie name, lower case; undefined when the gateway forwards it (then upstreams own it) */
  refreshCookie: string | undefined
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
export function responseHeaderList (rules: ResponseRules, headers: Readonly<Record<string, string | string[] | undefined>>, ctx: ResponseContext): Array<string | string[]> {
  const out: Array<string | string[]> = []
  const nominated = connectionNominated(headers.connection)
  const cors = ctx.cors
  let vary: string | string[] | undefined
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || HOP_BY_HOP.has(name) || name === 'x-request-id' || name === 'clear-site-data') continue
    if (nominated !== undefined && nominated.has(name)) continue
    if (name === 'set-cookie') {
      const kept = keepCookies(rules.refreshCookie, value)
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
  out.push('x-request-id', ctx.requestId)
  return out
}

/** the same rules for the headers of a 103 Early Hints */
export function earlyHintsHeaders (headers: Readonly<Record<string, string | string[] | undefined>>): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const nominated = connectionNominated(headers.connection)
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || HOP_BY_HOP.has(name) || name === 'set-cookie' || name === 'clear-site-data') continue
    if (nominated !== undefined && nominated.has(name)) continue
    out[name] = value
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
  // a nameless cookie is sent as its bare value: `=__Host-x=v` would arrive as `__Host-x=v`
  return name === '' && parsed.value.toLowerCase().startsWith(lowerName + '=')
}
