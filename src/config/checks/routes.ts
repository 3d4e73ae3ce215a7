import { durationMs } from '../duration.js'
import { HTTP_METHODS, type HttpMethod, type RouteConfig, type ScopeRequirement } from '../types.js'
import { problem, type CheckContext, type Raw } from './context.js'

/**
 * `routes:` — each route on its own, then the table as a whole: duplicates, prefixes the
 * gateway owns, scope rules that leave methods uncovered (no implicit allow), and nested
 * routes that would open a hole in a protected one.
 */

/** paths the gateway answers itself; a route may not take them over or sit above them */
export const GATEWAY_PATHS = ['/auth', '/.well-known/jwks.json'] as const

export interface RouteContext {
  /** names of every configured issuer, `self` included */
  issuers: readonly string[]
  /** identity.assertion is configured */
  assertion: boolean
  /** `cors:` is configured */
  cors: boolean
  /** server.requestBufferBytes */
  requestBufferBytes: number
}

export function checkRoutes (routes: Raw[], rc: RouteContext, ctx: CheckContext): RouteConfig[] {
  const out: RouteConfig[] = routes.map((r, i) => checkRoute(r, `/routes/${i}`, rc, ctx))
  const names = new Map<string, number>()
  const prefixes = new Map<string, number>()
  out.forEach((r, i) => {
    if (names.has(r.name)) problem(ctx, `/routes/${i}/name`, `duplicate route name "${r.name}" (also /routes/${names.get(r.name)})`)
    names.set(r.name, i)
    // matching is case-insensitive, so are duplicates
    const key = r.prefix.toLowerCase()
    if (prefixes.has(key)) problem(ctx, `/routes/${i}/prefix`, `duplicate prefix "${r.prefix}" (also /routes/${prefixes.get(key)})`)
    prefixes.set(key, i)
  })
  checkShadowing(out, ctx)
  return out
}

function checkRoute (r: Raw, path: string, rc: RouteContext, ctx: CheckContext): RouteConfig {
  let upstreamOrigin = ''
  let upstreamHost = ''
  try {
    const url = new URL(r.upstream)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      problem(ctx, `${path}/upstream`, 'must be an http:// or https:// URL')
    } else if (url.username !== '' || url.password !== '') {
      problem(ctx, `${path}/upstream`, 'must not carry credentials')
    } else if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
      problem(ctx, `${path}/upstream`, 'must be an origin (scheme://host:port); put a path in rewritePrefix')
    }
    upstreamOrigin = url.origin
    upstreamHost = url.host
  } catch {
    problem(ctx, `${path}/upstream`, 'must be an http:// or https:// URL')
  }
  const prefix = r.prefix === '/' ? '/' : String(r.prefix).replace(/\/+$/, '')
  checkGatewayPaths(prefix, `${path}/prefix`, ctx)

  const methods = r.methods as HttpMethod[] | undefined
  const scopes: Record<string, ScopeRequirement> = {}
  for (const [method, rule] of Object.entries((r.scopes ?? {}) as Record<string, unknown>)) {
    scopes[method] = Array.isArray(rule) ? { allOf: rule, anyOf: [] } : { allOf: [], anyOf: (rule as { anyOf: string[] }).anyOf }
    if (methods !== undefined && method !== '*' && !methods.includes(method as HttpMethod)) {
      problem(ctx, `${path}/scopes/${method}`, `method ${method} is not in this route's methods`)
    }
  }
  if (r.auth !== 'required' && Object.keys(scopes).length > 0) {
    problem(ctx, `${path}/scopes`, `scopes need auth: required (an ${r.auth} route lets requests without a token through)`)
  }
  if (r.auth === 'required' && Object.keys(scopes).length > 0) {
    const uncovered = uncoveredMethods(scopes, methods)
    if (uncovered.length > 0) {
      problem(ctx, `${path}/scopes`, `no rule for ${uncovered.join(', ')}: give each method a rule or add "*" (an explicit "*": [] means any valid token)`)
    }
  }

  const issuers = (r.issuers as string[] | undefined) ?? rc.issuers
  if (r.issuers !== undefined) {
    if (r.auth === 'public') problem(ctx, `${path}/issuers`, 'a public route looks at no token: issuers has no effect')
    ;(r.issuers as string[]).forEach((name, j) => {
      if (!rc.issuers.includes(name)) problem(ctx, `${path}/issuers/${j}`, `unknown issuer "${name}" (configured: ${rc.issuers.join(', ')})`)
    })
  }
  if (r.assertion !== undefined && !rc.assertion) {
    problem(ctx, `${path}/assertion`, 'needs identity.assertion (the header and lifetime of assertions)')
  }
  if (r.assertion !== undefined && r.auth === 'public') {
    problem(ctx, `${path}/assertion`, 'a public route has no verified identity to assert')
  }
  if (r.cors === false && !rc.cors) {
    problem(ctx, `${path}/cors`, 'cors: false has no effect without a top-level cors: section')
  }
  // a WebSocket route's maxBodyBytes caps its messages, which are never buffered
  if (r.requestBuffering === true && r.websocket !== true && r.maxBodyBytes > rc.requestBufferBytes) {
    problem(ctx, `${path}/maxBodyBytes`, `${String(r.maxBodyBytes)} is more than server.requestBufferBytes (${rc.requestBufferBytes}): a body this large could never be read whole; lower it, raise server.requestBufferBytes, or set requestBuffering: false (bodies are then streamed as they arrive)`)
  }
  const timeoutMs = durationMs(r.timeout)
  const idleTimeoutMs = durationMs(r.idleTimeout)
  if (timeoutMs === 0) problem(ctx, `${path}/timeout`, 'must be more than 0')
  if (idleTimeoutMs === 0) problem(ctx, `${path}/idleTimeout`, 'must be more than 0')
  return {
    name: r.name,
    prefix,
    upstream: r.upstream,
    upstreamOrigin,
    upstreamHost,
    rewritePrefix: r.rewritePrefix ?? prefix,
    methods,
    auth: r.auth,
    scopes,
    issuers,
    timeoutMs,
    idleTimeoutMs,
    queueLimit: r.queueLimit,
    connections: r.connections,
    maxBodyBytes: r.maxBodyBytes,
    requestBuffering: r.requestBuffering,
    preserveHost: r.preserveHost,
    sandbox: r.sandbox,
    cookies: r.cookies,
    websocket: r.websocket,
    cors: r.cors,
    assertionAudience: r.assertion?.audience,
    allowShadow: r.allowShadow,
  }
}

/** the methods a rule set leaves without a rule; HEAD is covered by GET's rule */
export function uncoveredMethods (scopes: Readonly<Record<string, ScopeRequirement>>, methods: readonly HttpMethod[] | undefined): HttpMethod[] {
  if (scopes['*'] !== undefined) return []
  return (methods ?? HTTP_METHODS).filter(m => scopes[m] === undefined && !(m === 'HEAD' && scopes.GET !== undefined))
}

function checkGatewayPaths (prefix: string, path: string, ctx: CheckContext): void {
  if (prefix === '/') return // a catch-all below the gateway's own endpoints is fine: they match first
  const p = prefix.toLowerCase()
  if (p === '/auth' || p.startsWith('/auth/')) {
    problem(ctx, path, 'the gateway answers /auth/* itself (login, refresh, logout); choose another prefix')
  } else if (p === '/.well-known' || p === '/.well-known/jwks.json') {
    problem(ctx, path, 'the gateway answers /.well-known/jwks.json itself; choose a prefix below /.well-known that is not it')
  }
}

const isUnder = (inner: string, outer: string): boolean => inner !== outer && (outer === '/' || inner.startsWith(outer + '/'))

/**
 * A route nested under a protected (`auth: required`) prefix takes part of it over. It is
 * refused, unless acknowledged with `allowShadow: true`, when it is weaker: public or
 * optional, accepting an issuer the outer route does not, or letting a method through with
 * a rule some token satisfies without satisfying the outer route's rule.
 */
function checkShadowing (routes: RouteConfig[], ctx: CheckContext): void {
  routes.forEach((inner, i) => {
    if (inner.allowShadow) return
    const innerPrefix = inner.prefix.toLowerCase()
    for (const outer of routes) {
      if (outer.auth !== 'required' || !isUnder(innerPrefix, outer.prefix.toLowerCase())) continue
      const why = weaker(inner, outer)
      if (why !== undefined) {
        problem(ctx, `/routes/${i}/prefix`, `route "${inner.name}" shadows part of protected route "${outer.name}" (${outer.prefix}) and is weaker: ${why}; set allowShadow: true if that is intended`)
      }
    }
  })
}

function weaker (inner: RouteConfig, outer: RouteConfig): string | undefined {
  if (inner.auth !== 'required') return `it is ${inner.auth}`
  const extra = inner.issuers.filter(n => !outer.issuers.includes(n))
  if (extra.length > 0) return `it accepts tokens from ${extra.join(', ')}`
  for (const m of inner.methods ?? HTTP_METHODS) {
    if (outer.methods !== undefined && !outer.methods.includes(m)) continue // the outer route refuses it anyway: no hole
    const o = ruleFor(outer.scopes, m)
    if (o === undefined) continue // any valid token passes the outer route
    const n = ruleFor(inner.scopes, m)
    if (n === undefined || !implies(n, o)) return `${m} needs less than on "${outer.name}"`
  }
  return undefined
}

function ruleFor (scopes: Readonly<Record<string, ScopeRequirement>>, m: string): ScopeRequirement | undefined {
  return scopes[m] ?? (m === 'HEAD' ? scopes.GET : undefined) ?? scopes['*']
}

/** every scope set that satisfies `a` also satisfies `b` */
function implies (a: ScopeRequirement, b: ScopeRequirement): boolean {
  const has = (s: string): boolean => a.allOf.includes(s)
  if (!b.allOf.every(s => has(s) || (a.anyOf.length > 0 && a.anyOf.every(x => x === s)))) return false
  if (b.anyOf.length === 0) return true
  // some required scope of `a` is one of b's, or every alternative of `a` is one of b's
  return a.allOf.some(s => b.anyOf.includes(s)) || (a.anyOf.length > 0 && a.anyOf.every(s => b.anyOf.includes(s)))
}
