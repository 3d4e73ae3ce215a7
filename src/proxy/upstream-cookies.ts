/**
 * What an upstream's `Set-Cookie` may do on the gateway's origin (response-headers.ts rule 14),
 * per route (`routes[].cookies`):
 *
 * - `route` (the default): the cookie is the route's alone. Its `Path` is kept under the route's
 *   prefix — the upstream's own Path moved from under its rewritePrefix like a Location, and
 *   anything outside the prefix (no Path, `Path=/`) becomes the prefix itself — and `Domain` is
 *   removed, so it is a host-only cookie. One upstream then cannot plant a cookie that another
 *   route's upstream reads (a session fixation across services), nor one that the browser sends
 *   to the gateway's auth endpoints: the cookies it sets by the hundred (a "cookie bomb", ~36 KB
 *   of them) make only its own route's requests too large (431), never `/auth/refresh` or
 *   `/auth/logout` (fix-upstream-cookie-jar). A `__Host-` cookie must have `Path=/` (RFC 6265bis
 *   §4.1.3.2), so under a narrower prefix it cannot be scoped and is dropped.
 * - `pass`: as the upstream sent it (a route whose upstream shares cookies with other routes or
 *   other hosts).
 * - `drop`: no cookie from this upstream reaches the client.
 *
 * The refresh cookie is protected in every mode (rule 3, applied before). What no mode can stop
 * is the browser's own limit on cookies per host (about 180 in Chromium): an upstream that sets
 * hundreds of distinct cookies, even scoped, makes the browser evict others, the refresh cookie
 * among them — `drop` is the setting for an upstream that need not set any.
 *
 * The header is read as a browser reads it (RFC 6265bis §5.6): the name-value pair up to the
 * first `;`, then attributes split on `;`, each named up to its first `=`, case-insensitively;
 * the last `Path` wins, so every `Path` and `Domain` is removed and one `Path` appended.
 */
import type { CookiePolicy } from '../config/types.js'
import type { UpstreamPath } from './upstream-path.js'

/** a route's cookie rule, compiled at boot: undefined = pass */
export type CookieRule = { drop: true } | { drop: false, scope: CookieScope } | undefined

export class CookieScope {
  readonly #prefix: string
  readonly #paths: UpstreamPath

  /** `prefix`: the route's prefix as configured; `paths`: its upstream path mapping */
  constructor (prefix: string, paths: UpstreamPath) {
    this.#prefix = prefix === '' ? '/' : prefix
    this.#paths = paths
  }

  /** the Set-Cookie as the client may get it, or undefined when it cannot be kept */
  scope (setCookie: string): string | undefined {
    const parts = setCookie.split(';')
    let path: string | undefined
    let hostOnly = true
    let kept = parts[0] ?? ''
    for (let i = 1; i < parts.length; i++) {
      const av = parts[i] as string
      const eq = av.indexOf('=')
      const name = (eq < 0 ? av : av.slice(0, eq)).trim().toLowerCase()
      if (name === 'path') {
        path = eq < 0 ? '' : av.slice(eq + 1).trim()
      } else if (name === 'domain') {
        hostOnly = false
      } else {
        kept += ';' + av
      }
    }
    if (this.#prefix === '/') {
      // the route is the whole origin: its cookies may be the origin's; still host-only
      return hostOnly ? setCookie : kept + (path === undefined ? '' : '; Path=' + path)
    }
    if (isHostPrefixed(parts[0] ?? '')) return undefined
    return kept + '; Path=' + this.#within(path)
  }

  /** the upstream's Path moved under the prefix; outside it (or none), the prefix */
  #within (path: string | undefined): string {
    if (path === undefined || path.charCodeAt(0) !== 47 /* / */) return this.#prefix
    const moved = this.#paths.location(path)
    return pathMatches(moved, this.#prefix) ? moved : this.#prefix
  }
}

/** RFC 6265bis §5.1.4 path-match: is `path` the prefix, or under it at a `/` boundary */
function pathMatches (path: string, prefix: string): boolean {
  if (!path.startsWith(prefix)) return false
  return path.length === prefix.length || prefix.endsWith('/') || path.charCodeAt(prefix.length) === 47
}

/** a `__Host-` name, in any case (RFC 6265bis §5.6 step 22: the prefix is matched case-insensitively) */
function isHostPrefixed (nameValue: string): boolean {
  return nameValue.trimStart().slice(0, 7).toLowerCase() === '__host-'
}

/** the Set-Cookie values a route's rule lets through */
export function applyCookieRule (rule: CookieRule, list: readonly string[]): string[] {
  if (rule === undefined) return list as string[]
  if (rule.drop) return []
  const out: string[] = []
  for (const c of list) {
    const scoped = rule.scope.scope(c)
    if (scoped !== undefined) out.push(scoped)
  }
  return out
}

export function compileCookieRule (policy: CookiePolicy, prefix: string, paths: UpstreamPath): CookieRule {
  if (policy === 'pass') return undefined
  if (policy === 'drop') return { drop: true }
  return { drop: false, scope: new CookieScope(prefix, paths) }
}
