import type { Dispatcher } from 'undici'
import type { ConfigProblem } from '../errors.js'
import { isAllowedAlgorithm, ALLOWED_ALGORITHMS } from '../tokens/issuers/algorithms.js'
import { remoteUrlProblem } from '../tokens/issuers/fetch.js'
import { REMOTE_KEY_SET_DEFAULTS, type KeySetLogger } from '../tokens/issuers/options.js'

/** What an upstream service tells the kit about the gateway in front of it. */
export interface PortcullisUpstreamOptions {
  /** the gateway's `tokens.issuer`: the `iss` of its assertions */
  issuer: string
  /** this service's audience, as its route says (`routes[].assertion.audience`); several when one service serves several routes */
  audience: string | readonly string[]
  /** pinned: the gateway's `tokens.algorithm` (EdDSA, ES256, RS256, PS256…); never HS*, never taken from the assertion */
  algorithms: readonly string[]
  /**
   * Where the gateway publishes its keys: `{gateway}/.well-known/jwks.json`. https, or http to
   * a loopback address with `allowInsecureHttp`. Fetched at start, refreshed in the background,
   * refetched (single flight, with a cooldown) when an assertion names an unknown kid. Never
   * a URL from the assertion (`jku`, `x5u` are not read).
   */
  jwksUrl?: string | undefined
  /** … or the gateway's JWKS document itself, e.g. read from a file: nothing is fetched */
  jwks?: { keys: unknown[] } | undefined
  /** the header the gateway sends it in (`identity.assertion.header`); default x-portcullis-assertion */
  header?: string | undefined
  /** clock difference tolerated between the gateway and this service, seconds; default 10 */
  clockToleranceSec?: number | undefined
  /** verify on every route (an onRequest hook); false: only where `onRequest: app.verifyAssertion` is set. Default true */
  global?: boolean | undefined
  /** verified assertions kept (the gateway reuses one per token for minutes); 0 turns the cache off. Default 1000 */
  cacheSize?: number | undefined
  /** http: jwksUrl to a loopback address (tests, a gateway sidecar) */
  allowInsecureHttp?: boolean | undefined
  /** how long registration waits for the first key fetch (it never fails because of it); default fetchTimeoutMs */
  startupWaitMs?: number | undefined
  /** key fetching, as for the gateway's own identity providers */
  fetchTimeoutMs?: number | undefined
  refreshIntervalMs?: number | undefined
  minRefreshIntervalMs?: number | undefined
  maxRefreshIntervalMs?: number | undefined
  cooldownMs?: number | undefined
  staleIfErrorMs?: number | undefined
  /** default: an undici Agent of the plugin's own, closed with the app */
  dispatcher?: Dispatcher | undefined
  /** default: the Fastify instance's logger */
  logger?: KeySetLogger | undefined
}

/** the options with every default applied */
export interface ResolvedUpstreamOptions {
  issuer: string
  audiences: readonly string[]
  algorithms: readonly string[]
  jwksUrl: string | undefined
  jwks: { keys: unknown[] } | undefined
  header: string
  clockToleranceSec: number
  global: boolean
  cacheSize: number
  allowInsecureHttp: boolean
  startupWaitMs: number
  fetchTimeoutMs: number
  refreshIntervalMs: number
  minRefreshIntervalMs: number
  maxRefreshIntervalMs: number
  cooldownMs: number
  staleIfErrorMs: number
}

export const UPSTREAM_DEFAULTS = {
  header: 'x-portcullis-assertion',
  clockToleranceSec: 10,
  cacheSize: 1000,
  // the gateway's JWKS changes when its operator rotates keys: a new kid is fetched on
  // demand, so the scheduled refresh only has to drop withdrawn keys
  refreshIntervalMs: 5 * 60_000,
  // the gateway is ours, not a third party to be polite to: after a key rotation its new kid
  // is fetched within 5 s; a flood of forged kids sent straight to this service costs one
  // fetch per 5 s
  minRefreshIntervalMs: 5_000,
  cooldownMs: 5_000,
} as const

const HEADER_NAME = /^[a-z0-9-]+$/

/** Every problem of the options as `{ path, message }`; empty when they are usable. */
export function checkUpstreamOptions (o: PortcullisUpstreamOptions): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const add = (path: string, message: string): void => { problems.push({ path, message }) }
  if (typeof o.issuer !== 'string' || o.issuer === '') add('/issuer', "must be the gateway's tokens.issuer")
  const audiences = typeof o.audience === 'string' ? [o.audience] : o.audience
  if (!Array.isArray(audiences) || audiences.length === 0 || audiences.some(a => typeof a !== 'string' || a === '')) {
    add('/audience', "must be this service's routes[].assertion.audience (a string or a non-empty list)")
  }
  if (!Array.isArray(o.algorithms) || o.algorithms.length === 0) add('/algorithms', "must list the gateway's tokens.algorithm")
  else {
    o.algorithms.forEach((alg, i) => {
      if (!isAllowedAlgorithm(alg)) {
        add(`/algorithms/${i}`, /^HS/i.test(String(alg))
          ? `${String(alg)}: assertions are verified with published keys, so they are never HMAC-signed`
          : `${String(alg)} is not one of ${ALLOWED_ALGORITHMS.join(', ')}`)
      }
    })
  }
  if ((o.jwksUrl === undefined) === (o.jwks === undefined)) add('/jwksUrl', 'give exactly one of jwksUrl or jwks')
  if (o.jwksUrl !== undefined) {
    const p = remoteUrlProblem(o.jwksUrl, o.allowInsecureHttp === true)
    if (p !== undefined) add('/jwksUrl', p)
  }
  if (o.jwks !== undefined && (typeof o.jwks !== 'object' || o.jwks === null || !Array.isArray(o.jwks.keys))) add('/jwks', 'must be a JWKS document: { "keys": [...] }')
  if (o.header !== undefined && !HEADER_NAME.test(o.header)) add('/header', 'must be a lower-case header name')
  const nonNegative = ['clockToleranceSec', 'cacheSize', 'startupWaitMs', 'staleIfErrorMs'] as const
  for (const k of nonNegative) if (o[k] !== undefined && !(Number.isSafeInteger(o[k]) && o[k] >= 0)) add(`/${k}`, 'must be an integer ≥ 0')
  const positive = ['fetchTimeoutMs', 'refreshIntervalMs', 'minRefreshIntervalMs', 'maxRefreshIntervalMs', 'cooldownMs'] as const
  for (const k of positive) if (o[k] !== undefined && !(Number.isSafeInteger(o[k]) && o[k] > 0)) add(`/${k}`, 'must be a positive integer')
  return problems
}

export function resolveUpstreamOptions (o: PortcullisUpstreamOptions): ResolvedUpstreamOptions {
  const fetchTimeoutMs = o.fetchTimeoutMs ?? REMOTE_KEY_SET_DEFAULTS.fetchTimeoutMs
  const minRefreshIntervalMs = o.minRefreshIntervalMs ?? UPSTREAM_DEFAULTS.minRefreshIntervalMs
  const maxRefreshIntervalMs = o.maxRefreshIntervalMs ?? REMOTE_KEY_SET_DEFAULTS.maxRefreshIntervalMs
  return {
    issuer: o.issuer,
    audiences: typeof o.audience === 'string' ? [o.audience] : [...o.audience],
    algorithms: [...o.algorithms],
    jwksUrl: o.jwksUrl,
    jwks: o.jwks,
    header: o.header ?? UPSTREAM_DEFAULTS.header,
    clockToleranceSec: o.clockToleranceSec ?? UPSTREAM_DEFAULTS.clockToleranceSec,
    global: o.global ?? true,
    cacheSize: o.cacheSize ?? UPSTREAM_DEFAULTS.cacheSize,
    allowInsecureHttp: o.allowInsecureHttp ?? false,
    startupWaitMs: o.startupWaitMs ?? fetchTimeoutMs,
    fetchTimeoutMs,
    refreshIntervalMs: Math.min(maxRefreshIntervalMs, Math.max(minRefreshIntervalMs, o.refreshIntervalMs ?? UPSTREAM_DEFAULTS.refreshIntervalMs)),
    minRefreshIntervalMs,
    maxRefreshIntervalMs,
    cooldownMs: o.cooldownMs ?? UPSTREAM_DEFAULTS.cooldownMs,
    staleIfErrorMs: o.staleIfErrorMs ?? REMOTE_KEY_SET_DEFAULTS.staleIfErrorMs,
  }
}
