import { parseArgs } from 'node:util'
import { Agent } from 'undici'
import { loadConfigFile } from './config/load.js'
import { HTTP_METHODS, SELF_ISSUER, type GatewayConfig, type IssuerConfig, type RouteConfig, type ScopeRequirement } from './config/types.js'
import { ConfigError } from './errors.js'
import { UpstreamPath } from './proxy/upstream-path.js'
import { RemoteKeySet, type RemoteKeySetStatus } from './tokens/issuers/remote-key-set.js'
import { keySetOptionsFor } from './tokens/issuers/options.js'

/**
 * `portcullis check`: the configuration validated (the loader refuses every error), then what
 * an operator should look at although it is allowed: the route table, the issuers with the
 * state of their keys (one fetch each, unless --offline), and warnings about routes that
 * overlap — longest-prefix routing means a nested route takes its part of the path away from
 * the enclosing one whole, for every method, so each nesting is named with what it changes.
 */

/** one fetch of an issuer's keys during `check`: an operator is waiting at a terminal */
export const CHECK_FETCH_TIMEOUT_MS = 3_000

const CHECK_USAGE = 'usage: portcullis check [-c gateway.yaml] [--offline]\n'

export async function checkCommand (args: string[]): Promise<number> {
  let values: { config: string, offline: boolean }
  try {
    values = parseArgs({ args, allowPositionals: true, options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' }, offline: { type: 'boolean', default: false } } }).values
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${CHECK_USAGE}`)
    return 2
  }
  const config = readConfigOrReport(values.config)
  if (config === undefined) return 1
  const out = [
    `${config.source}: ok (${config.routes.length} routes, ${config.tokens.algorithm}, ${config.tokens.keys.length} keys)`,
    '',
    routeTable(config),
    '',
    limitsTable(config),
    '',
    listenerLine(config),
    '',
    'issuers:',
    indent(await issuerTable(config, { offline: values.offline }), '  '),
  ]
  const warnings = routeWarnings(config)
  if (warnings.length > 0) out.push('', `warnings (${warnings.length}):`, ...warnings.map(w => indent(`- ${w}`, '  ', '    ')))
  process.stdout.write(out.join('\n') + '\n')
  return 0 // warnings do not fail a check: the configuration is valid
}

/** the configuration, or undefined after printing every problem (the same text `start` prints) */
export function readConfigOrReport (file: string): GatewayConfig | undefined {
  try {
    return loadConfigFile(file, { env: process.env })
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\nrefusing to start.\n')
      return undefined
    }
    throw err
  }
}

/** how each route treats slow, busy and large exchanges (issue 8's settings) */
export function limitsTable (config: GatewayConfig): string {
  const rows = [['ROUTE', 'TIMEOUT', 'IDLE', 'QUEUE', 'CONNECTIONS', 'MAX BODY', 'BODY', 'HOST', 'CORS', 'WEBSOCKET', 'PAGES', 'COOKIES', 'ISSUERS', 'ASSERTION']]
  for (const r of config.routes) {
    rows.push([
      r.name, duration(r.timeoutMs), duration(r.idleTimeoutMs), String(r.queueLimit), String(r.connections), bytes(r.maxBodyBytes),
      r.requestBuffering ? 'buffered' : 'streamed', r.preserveHost ? 'client' : 'upstream', config.cors !== undefined && r.cors ? 'on' : '-', r.websocket ? 'yes' : '-',
      r.sandbox ? 'sandboxed' : 'trusted', r.cookies, r.auth === 'public' ? '-' : r.issuers.join(','), r.assertionAudience ?? '-',
    ])
  }
  return table(rows)
}

/** the public listener and what applies to every connection */
export function listenerLine (config: GatewayConfig): string {
  const s = config.server
  const scheme = s.tls === undefined ? 'http' : 'https'
  const trust = s.trustProxy === true ? 'every peer' : s.trustProxy === false ? 'none' : s.trustProxy.join(', ')
  return `listener: ${scheme}://${s.host}:${s.port}${s.http2 ? ' (HTTP/2 and HTTP/1.1)' : ''}, workers ${s.workers}, ` +
    `writeTimeout ${duration(s.writeTimeoutMs)}, requestTimeout ${duration(s.requestTimeoutMs)}, request buffers ${bytes(s.requestBufferBytes)}, trusted proxies: ${trust}`
}

function duration (ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000}h`
  if (ms % 60_000 === 0) return `${ms / 60_000}m`
  if (ms % 1000 === 0) return `${ms / 1000}s`
  return `${ms}ms`
}

function bytes (n: number): string {
  if (n >= 1_048_576 && n % 1_048_576 === 0) return `${n / 1_048_576} MiB`
  if (n >= 1024 && n % 1024 === 0) return `${n / 1024} KiB`
  return `${n} B`
}

export function routeTable (config: GatewayConfig): string {
  const rows = [['ROUTE', 'PREFIX', 'UPSTREAM', 'AUTH', 'METHODS', 'SCOPES']]
  for (const r of config.routes) {
    const scopes = Object.entries(r.scopes).map(([m, s]) => `${m}: ${s.anyOf.length > 0 ? `anyOf(${s.anyOf.join(' ')})` : s.allOf.join(' ')}`).join('; ')
    rows.push([r.name, r.prefix, r.upstreamOrigin + r.rewritePrefix, r.auth, r.methods?.join(',') ?? '*', scopes || '-'])
  }
  return table(rows)
}

// ---------------------------------------------------------------------------------------
// issuers

/**
 * One line per issuer: the gateway's own keys, then each identity provider with the state
 * of its keys after ONE fetch (discovery included), on a dispatcher of its own that is
 * closed afterwards, so the command ends as soon as the fetches do.
 */
export async function issuerTable (config: GatewayConfig, options: { offline: boolean, timeoutMs?: number }): Promise<string> {
  const own = config.tokens.keys.map((k, i) => `${k.kid} (${i === 0 ? 'signs' : k.privateKeyPem !== undefined || k.secret !== undefined ? 'verifies, can sign' : 'verifies'})`)
  const rows = [[SELF_ISSUER, config.tokens.issuer, 'own keys', `${config.tokens.algorithm}: ${own.join(', ')}`]]
  if (config.issuers.length > 0) {
    const dispatcher = new Agent({ connections: 1, keepAliveTimeout: 1_000 })
    try {
      const states = await Promise.all(config.issuers.map(async i => options.offline ? undefined : await fetchOnce(i, dispatcher, options.timeoutMs ?? CHECK_FETCH_TIMEOUT_MS)))
      config.issuers.forEach((issuer, n) => { rows.push(issuerRow(issuer, states[n])) })
    } finally {
      await dispatcher.destroy()
    }
  }
  return table(rows)
}

type FetchOutcome = RemoteKeySetStatus | { invalid: string }

async function fetchOnce (issuer: IssuerConfig, dispatcher: Agent, timeoutMs: number): Promise<FetchOutcome> {
  let set: RemoteKeySet
  try {
    set = new RemoteKeySet(keySetOptionsFor(issuer, { fetchTimeoutMs: Math.min(issuer.jwks.fetchTimeoutMs, timeoutMs), dispatcher }))
  } catch (err) {
    return { invalid: (err as Error).message.split('\n').slice(1).join('; ') || (err as Error).message }
  }
  try {
    set.start()
    await set.whenSettled()
    return set.status
  } finally {
    set.close()
  }
}

function issuerRow (issuer: IssuerConfig, outcome: FetchOutcome | undefined): string[] {
  const source = issuer.discovery ? 'discovery' : `jwksUri ${issuer.jwksUri ?? ''}`
  if (outcome === undefined) return [issuer.name, issuer.issuer, 'not fetched (--offline)', source]
  if ('invalid' in outcome) return [issuer.name, issuer.issuer, 'invalid', outcome.invalid]
  const from = outcome.jwksUri === undefined ? source : outcome.jwksUri
  if (outcome.keys > 0) {
    const kids = outcome.kids.length > 0 ? outcome.kids.join(', ') : 'no kids'
    return [issuer.name, issuer.issuer, `${outcome.state}: ${outcome.keys} key${outcome.keys === 1 ? '' : 's'} (${kids})`, from]
  }
  const error = outcome.lastError === undefined ? 'no keys' : `${outcome.lastError.code}: ${outcome.lastError.message}`
  return [issuer.name, issuer.issuer, `${outcome.state}: 0 keys`, `${from} — ${error}`]
}

// ---------------------------------------------------------------------------------------
// warnings

/**
 * What a valid configuration may still get wrong, one warning per finding (a warning may
 * span lines). Pure: reads the configuration only.
 */
export function routeWarnings (config: GatewayConfig): string[] {
  const routes = config.routes
  return [
    ...routes.flatMap(r => nestedWarning(r, routes)),
    ...lookAlikeWarnings(routes),
    ...routes.flatMap(r => unreachableWarnings(r, config)),
    ...catchAllWarnings(routes),
    ...poolWarnings(routes),
    ...routes.flatMap(r => issuerWarning(r, config)),
    ...config.issuers.flatMap(subjectWarning),
  ]
}

/**
 * An identity provider whose requiredClaims leave out `sub` lets through tokens without one
 * (client-credentials tokens of some providers): they reach upstreams with no `sub` header
 * and an assertion without `sub`, which the upstream kit refuses, so an upstream cannot tell
 * their callers apart by `sub`. Before, every such token was the subject "" (a stop 30 review
 * finding, fix-subless-token-one-identity).
 */
function subjectWarning (issuer: IssuerConfig): string[] {
  if (issuer.requiredClaims.includes('sub')) return []
  return [`issuer "${issuer.name}": requiredClaims leaves out sub, so its tokens without one reach upstreams with no subject — ` +
    'no sub header, no sub in the assertion (the upstream kit refuses such an assertion) — and upstreams cannot tell their callers apart by sub; ' +
    'add sub to requiredClaims, or map what identifies them (identity.headers: {client_id: x-user-client})']
}

/**
 * A route that accepts tokens of several issuers sends the upstream the same identity headers
 * for the same `sub`, whoever issued it: an identity provider whose token carries a local
 * user's id (a UUID that reaches upstreams in headers) passes for her there. Unless the
 * issuer reaches the upstream too — mapped to a header, or in the route's assertion
 * (`token_iss`) — say so. (A stop 28 review finding; the gateway does not namespace `sub`,
 * which would change every upstream's user ids.)
 */
function issuerWarning (route: RouteConfig, config: GatewayConfig): string[] {
  if (route.auth === 'public' || route.issuers.length < 2 || route.assertionAudience !== undefined) return []
  if (config.identity.mappings.some(m => m.path.length === 1 && m.path[0] === 'iss')) return []
  return [`route "${route.name}" (${route.prefix}) accepts tokens of ${route.issuers.length} issuers (${route.issuers.join(', ')}) and its upstream cannot tell them apart: ` +
    'two issuers\' tokens with the same sub get the same identity headers; map the issuer (identity.headers: {iss: x-user-issuer}), ' +
    'send an assertion (it carries token_iss), or narrow the route\'s issuers']
}

const lower = (s: string): string => s.toLowerCase()
const isUnder = (inner: string, outer: string): boolean => inner !== outer && (outer === '/' || lower(inner).startsWith(lower(outer) + '/'))

/** the route that would serve `route`'s paths if it were not there: the longest enclosing prefix */
function enclosing (route: RouteConfig, routes: readonly RouteConfig[]): RouteConfig | undefined {
  let best: RouteConfig | undefined
  for (const r of routes) {
    if (isUnder(route.prefix, r.prefix) && (best === undefined || r.prefix.length > best.prefix.length)) best = r
  }
  return best
}

/**
 * A route under another takes every request below its prefix, whatever the method: the
 * enclosing route is never consulted there (a method the nested route does not allow is a
 * 405, not a fall-back). Named with what changes, method by method, even when allowShadow
 * acknowledged it or nothing got weaker. A public or optional `/` is left out: routes under
 * it are stricter islands, which is what a catch-all is for (catchAllWarnings covers it).
 */
function nestedWarning (inner: RouteConfig, routes: readonly RouteConfig[]): string[] {
  const outer = enclosing(inner, routes)
  if (outer === undefined || (outer.prefix === '/' && outer.auth !== 'required')) return []
  const changes: string[] = []
  const byChange = new Map<string, string[]>()
  let weaker = false
  let stricter = false
  for (const m of HTTP_METHODS) {
    const before = access(outer, m)
    const after = access(inner, m)
    if (before.text === after.text) continue
    if (before.rule !== undefined && after.rule !== undefined) {
      // both need scopes: weaker when some token satisfies the nested rule but not the enclosing one
      if (!implies(after.rule, before.rule)) weaker = true
      else if (!implies(before.rule, after.rule)) stricter = true
    } else if (after.strength < before.strength) weaker = true
    else stricter = true
    const key = `${before.text} → ${after.text}`
    byChange.set(key, [...(byChange.get(key) ?? []), m])
  }
  for (const [change, methods] of byChange) changes.push(`${methods.join(', ')}: ${change}`)
  const extraIssuers = inner.auth === 'public' ? [] : inner.issuers.filter(n => !outer.issuers.includes(n))
  const lostIssuers = inner.auth === 'public' ? [] : outer.issuers.filter(n => !inner.issuers.includes(n))
  if (outer.auth !== 'public' && inner.auth !== 'public' && (extraIssuers.length > 0 || lostIssuers.length > 0)) {
    changes.push(`issuers: ${outer.issuers.join(', ')} → ${inner.issuers.join(', ')}`)
    if (extraIssuers.length > 0) weaker = true
    if (lostIssuers.length > 0) stricter = true
  }
  const outerTarget = outer.upstreamOrigin + new UpstreamPath(outer.prefix, outer.rewritePrefix).map(inner.prefix)
  const innerTarget = inner.upstreamOrigin + new UpstreamPath(inner.prefix, inner.rewritePrefix).map(inner.prefix)
  if (outerTarget !== innerTarget) changes.push(`${inner.prefix} goes to ${innerTarget} instead of ${outerTarget}`)
  if (outer.websocket !== inner.websocket) changes.push(`WebSocket upgrades: ${outer.websocket ? 'accepted' : 'refused'} → ${inner.websocket ? 'accepted' : 'refused'}`)
  if (outer.cors !== inner.cors) changes.push(`CORS: ${outer.cors ? 'on' : 'off'} → ${inner.cors ? 'on' : 'off'}`)
  if (outer.assertionAudience !== inner.assertionAudience) changes.push(`assertion: ${outer.assertionAudience ?? 'none'} → ${inner.assertionAudience ?? 'none'}`)

  const verdict = weaker
    ? (inner.allowShadow ? 'weaker, acknowledged with allowShadow' : 'weaker')
    : stricter ? 'stricter' : changes.length > 0 ? 'equally strict' : 'equally strict and identical: the nested route changes nothing'
  const head = `route "${inner.name}" (${inner.prefix}) is nested under "${outer.name}" (${outer.prefix}): every request under ${inner.prefix} follows "${inner.name}" only (${verdict})`
  return [[head, ...changes.map(c => `  ${c}`)].join('\n')]
}

/**
 * What a route asks of a request with this method, and how hard that is to satisfy:
 * 0 public, 1 token optional, 2 any valid token, 3 scopes (compared by `implies`), 4 denied, 5 405.
 */
function access (route: RouteConfig, method: string): { text: string, strength: number, rule?: ScopeRequirement } {
  if (route.methods !== undefined && !route.methods.includes(method as never)) return { text: '405', strength: 5 }
  if (route.auth === 'public') return { text: 'public', strength: 0 }
  if (route.auth === 'optional') return { text: 'token optional', strength: 1 }
  const rule = ruleFor(route.scopes, method)
  if (rule === undefined) return Object.keys(route.scopes).length > 0 ? { text: 'denied (no rule)', strength: 4 } : { text: 'any valid token', strength: 2 }
  if (rule.allOf.length + rule.anyOf.length === 0) return { text: 'any valid token', strength: 2 }
  return { text: describeRule(rule), strength: 3, rule }
}

/**
 * Every scope set that satisfies `a` satisfies `b`: b's required scopes are all required by
 * `a`, and b's alternatives (if any) are met by a required scope of `a` or by each of a's
 * alternatives. (The loader's shadowing check reasons the same way: config/checks/routes.ts.)
 */
function implies (a: ScopeRequirement, b: ScopeRequirement): boolean {
  if (!b.allOf.every(s => a.allOf.includes(s) || (a.anyOf.length > 0 && a.anyOf.every(x => x === s)))) return false
  if (b.anyOf.length === 0) return true
  return a.allOf.some(s => b.anyOf.includes(s)) || (a.anyOf.length > 0 && a.anyOf.every(s => b.anyOf.includes(s)))
}

/** the rule the gateway applies to a method: its own, HEAD → GET's, else "*" (authorize.ts compilePolicy) */
export function ruleFor (scopes: Readonly<Record<string, ScopeRequirement>>, method: string): ScopeRequirement | undefined {
  return scopes[method] ?? (method === 'HEAD' ? scopes.GET : undefined) ?? scopes['*']
}

export function describeRule (rule: ScopeRequirement): string {
  if (rule.anyOf.length > 0) return `one of ${rule.anyOf.join(', ')}`
  if (rule.allOf.length === 0) return 'any valid token'
  return rule.allOf.join(' + ')
}

/**
 * Prefixes that differ only in their last segment's case or spelling (`-`, `_`, `.`, a plural
 * `s`): one is likely a typo of the other, and a client aiming at one reaches the other or no
 * route. Prefixes equal but for case are already refused by the loader (matching ignores case).
 */
function lookAlikeWarnings (routes: readonly RouteConfig[]): string[] {
  const out: string[] = []
  const key = (prefix: string): string => {
    const cut = prefix.lastIndexOf('/')
    return lower(prefix.slice(0, cut)) + '/' + lower(prefix.slice(cut + 1)).replace(/[-_.~]/g, '').replace(/s$/, '')
  }
  routes.forEach((a, i) => {
    for (const b of routes.slice(i + 1)) {
      if (a.prefix === '/' || b.prefix === '/' || key(a.prefix) !== key(b.prefix)) continue
      out.push(`prefixes ${a.prefix} ("${a.name}") and ${b.prefix} ("${b.name}") differ only in their last segment's case or spelling: a client aiming at one reaches the other${a.auth !== b.auth ? ` (${a.auth} vs ${b.auth})` : ''}`)
    }
  })
  return out
}

/**
 * Routes some or all of whose methods never reach the upstream: a WebSocket route whose
 * methods leave out GET (every upgrade is a GET), and a CORS route that allows only OPTIONS
 * (the gateway answers every preflight itself). With longest-prefix routing no route is ever
 * hidden whole by another's prefix — a nested route takes its part for every method, which
 * nestedWarning reports.
 */
function unreachableWarnings (route: RouteConfig, config: GatewayConfig): string[] {
  const out: string[] = []
  const methods = route.methods ?? HTTP_METHODS
  if (route.websocket && !methods.includes('GET')) {
    out.push(`route "${route.name}" has websocket: true but its methods (${methods.join(', ')}) leave out GET: no WebSocket upgrade can ever reach it`)
  }
  const cors = config.cors !== undefined && route.cors
  if (cors && methods.every(m => m === 'OPTIONS')) {
    out.push(`route "${route.name}" allows only OPTIONS and answers CORS: the gateway answers every preflight itself, so only OPTIONS requests that are not preflights reach ${route.upstreamOrigin}`)
  }
  if (route.auth === 'required' && Object.keys(route.scopes).length > 0 && methods.every(m => ruleFor(route.scopes, m) === undefined)) {
    out.push(`route "${route.name}" can never be reached: no method it allows has a scope rule`)
  }
  return out
}

/** a public `/` next to protected routes: every path no other route matches is proxied without a token */
function catchAllWarnings (routes: readonly RouteConfig[]): string[] {
  const root = routes.find(r => r.prefix === '/')
  const guarded = routes.filter(r => r.auth === 'required' && r.prefix !== '/')
  if (root === undefined || root.auth !== 'public' || guarded.length === 0) return []
  return [`route "${root.name}" is a public catch-all (/) next to protected routes (${guarded.map(r => r.name).join(', ')}): any path no other prefix matches — a misspelt prefix, a path beside them — goes to ${root.upstreamOrigin} without a token`]
}

/** the gateway keeps one pool per (origin, connections): the same origin with two sizes is two pools */
function poolWarnings (routes: readonly RouteConfig[]): string[] {
  const byOrigin = new Map<string, RouteConfig[]>()
  for (const r of routes) byOrigin.set(r.upstreamOrigin, [...(byOrigin.get(r.upstreamOrigin) ?? []), r])
  const out: string[] = []
  for (const [origin, list] of byOrigin) {
    const sizes = [...new Set(list.map(r => r.connections))]
    if (sizes.length < 2) continue
    const total = sizes.reduce((a, b) => a + b, 0)
    out.push(`upstream ${origin} is used with different connections (${list.map(r => `${r.name}: ${r.connections}`).join(', ')}): ${sizes.length} separate pools, up to ${total} connections to it; give the routes the same value to share one pool`)
  }
  return out
}

// ---------------------------------------------------------------------------------------

export function table (rows: readonly string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(row => (row[i] ?? '').length)))
  return rows.map(row => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

function indent (text: string, first: string, rest = first): string {
  return text.split('\n').map((line, i) => (i === 0 ? first : rest) + line).join('\n')
}
