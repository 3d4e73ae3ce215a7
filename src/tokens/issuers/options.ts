/**
 * What one external issuer's key set is configured with: the options, their recommended
 * values, and the check the constructor (and the config loader, if it likes) runs on them.
 */
import type { Dispatcher } from 'undici'
import type { IssuerConfig } from '../../config/types.js'
import type { ConfigProblem } from '../../errors.js'
import { ALLOWED_ALGORITHMS, isAllowedAlgorithm } from './algorithms.js'
import { remoteUrlProblem } from './fetch.js'
import { MAX_TIMER_MS } from '../../config/duration.js'

/**
 * Recommended values (config/schema.ts should take its defaults from here, so they live once).
 */
export const REMOTE_KEY_SET_DEFAULTS = {
  /** one fetch, connect to last byte; an IdP slower than this is treated as down */
  fetchTimeoutMs: 5_000,
  /** a real JWKS is 1–20 KiB (Entra ID with x5c chains ~15 KiB); a discovery document ~2–6 KiB */
  maxResponseBytes: 256 * 1024,
  /** floor of the background refresh interval, and the retry interval while fetches fail */
  minRefreshIntervalMs: 30_000,
  /** after any attempt, no unknown-kid fetch before this (bounds what a flood of kids costs) */
  cooldownMs: 30_000,
  /** when the IdP sends no Cache-Control max-age */
  defaultRefreshIntervalMs: 10 * 60_000,
  /** upper bound on how long a key the IdP withdrew can keep verifying while the IdP is reachable */
  maxRefreshIntervalMs: 60 * 60_000,
  /** how long past staleness the last good keys still verify while refreshes fail */
  staleIfErrorMs: 12 * 60 * 60_000,
  /** entries in one JWKS; real sets have 1–10 */
  maxKeys: 100,
} as const

export { MAX_TIMER_MS }

export interface KeySetLogger {
  debug: (obj: object, msg: string) => void
  info: (obj: object, msg: string) => void
  warn: (obj: object, msg: string) => void
  error: (obj: object, msg: string) => void
}

export interface KeySetTimers {
  setTimeout: (fn: () => void, delayMs: number) => unknown
  clearTimeout: (handle: unknown) => void
}

export interface RemoteKeySetOptions {
  /** the issuer's name in gateway.yaml, for logs and metrics */
  name: string
  /** the exact `iss` of its tokens; with discovery, also where the configuration is looked up */
  issuer: string
  /** fetch {issuer}/.well-known/openid-configuration for `jwks_uri` (exclusive with jwksUri) */
  discovery: boolean
  jwksUri?: string | undefined
  /** pinned; a subset of ALLOWED_ALGORITHMS */
  algorithms: readonly string[]
  fetchTimeoutMs: number
  maxResponseBytes: number
  minRefreshIntervalMs: number
  /** unknown-kid cooldown, counted from the last attempt; default minRefreshIntervalMs */
  cooldownMs?: number | undefined
  maxRefreshIntervalMs: number
  defaultRefreshIntervalMs: number
  staleIfErrorMs: number
  maxKeys: number
  /**
   * Permit http: URLs to loopback addresses only (tests, a sidecar IdP). The config loader
   * should set it from an explicit operator setting; https is required otherwise.
   */
  allowInsecureHttp?: boolean | undefined
  /** epoch ms; default: a monotonic clock, so a wall-clock jump neither expires nor revives keys */
  clock?: (() => number) | undefined
  timers?: KeySetTimers | undefined
  logger?: KeySetLogger | undefined
  /** default: one process-wide undici Agent for all key fetches */
  dispatcher?: Dispatcher | undefined
}

/**
 * Every problem of one issuer's options, as `{ path, message }` relative to the issuer entry
 * (the config loader prefixes `/issuers/<i>`). Empty when the options are usable.
 */
export function checkRemoteKeySetOptions (o: RemoteKeySetOptions): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const add = (path: string, message: string): void => { problems.push({ path, message }) }
  const insecure = o.allowInsecureHttp === true
  if (typeof o.name !== 'string' || o.name === '') add('/name', 'must be a non-empty string')
  if (typeof o.issuer !== 'string' || o.issuer === '') add('/issuer', 'must be a non-empty string')
  else if (o.discovery) {
    const p = remoteUrlProblem(o.issuer, insecure)
    if (p !== undefined) add('/issuer', `with discovery, the issuer ${p}`)
  }
  if (o.discovery && o.jwksUri !== undefined) add('/jwksUri', 'give either discovery: true or jwksUri, not both')
  if (!o.discovery && o.jwksUri === undefined) add('/jwksUri', 'required when discovery is false')
  if (o.jwksUri !== undefined) {
    const p = remoteUrlProblem(o.jwksUri, insecure)
    if (p !== undefined) add('/jwksUri', p)
  }
  if (!Array.isArray(o.algorithms) || o.algorithms.length === 0) add('/algorithms', 'must list at least one algorithm')
  else {
    o.algorithms.forEach((alg, i) => {
      if (isAllowedAlgorithm(alg)) return
      add(`/algorithms/${i}`, /^HS/i.test(String(alg))
        ? `${String(alg)} is symmetric: a key from a published JWKS is public, so it can never be pinned`
        : `${String(alg)} is not one of ${ALLOWED_ALGORITHMS.join(', ')}`)
    })
    if (new Set(o.algorithms).size !== o.algorithms.length) add('/algorithms', 'lists an algorithm twice')
  }
  const positive = ['fetchTimeoutMs', 'maxResponseBytes', 'minRefreshIntervalMs', 'defaultRefreshIntervalMs', 'maxRefreshIntervalMs', 'maxKeys'] as const
  for (const k of positive) {
    if (!Number.isSafeInteger(o[k]) || o[k] <= 0) add(`/${k}`, 'must be a positive integer')
  }
  if (!Number.isSafeInteger(o.staleIfErrorMs) || o.staleIfErrorMs < 0) add('/staleIfErrorMs', 'must be an integer ≥ 0')
  if (o.cooldownMs !== undefined && (!Number.isSafeInteger(o.cooldownMs) || o.cooldownMs <= 0)) add('/cooldownMs', 'must be a positive integer')
  if (o.minRefreshIntervalMs > o.defaultRefreshIntervalMs || o.defaultRefreshIntervalMs > o.maxRefreshIntervalMs) {
    add('/defaultRefreshIntervalMs', 'must lie between minRefreshIntervalMs and maxRefreshIntervalMs')
  }
  if (o.maxRefreshIntervalMs > MAX_TIMER_MS) add('/maxRefreshIntervalMs', `must be at most ${MAX_TIMER_MS} ms`)
  return problems
}

/** the key set options of a configured issuer (`issuers[]` in gateway.yaml): the one mapping */
export function keySetOptionsFor (issuer: IssuerConfig, extra: Partial<RemoteKeySetOptions> = {}): RemoteKeySetOptions {
  return {
    name: issuer.name,
    issuer: issuer.issuer,
    discovery: issuer.discovery,
    jwksUri: issuer.jwksUri,
    algorithms: issuer.algorithms,
    fetchTimeoutMs: issuer.jwks.fetchTimeoutMs,
    maxResponseBytes: issuer.jwks.maxBytes,
    minRefreshIntervalMs: issuer.jwks.minRefreshIntervalMs,
    maxRefreshIntervalMs: issuer.jwks.maxRefreshIntervalMs,
    defaultRefreshIntervalMs: issuer.jwks.refreshIntervalMs,
    cooldownMs: issuer.jwks.cooldownMs,
    staleIfErrorMs: issuer.jwks.staleIfErrorMs,
    maxKeys: issuer.jwks.maxKeys,
    allowInsecureHttp: issuer.allowInsecureHttp,
    ...extra,
  }
}
