/**
 * The keys of one external token issuer (DESIGN.md "Identity in"), kept in memory and
 * refreshed in the background, so the verifier can look a key up synchronously on the hot path.
 *
 * Written on undici rather than on a kept library, because each lacked parts of the contract
 * (jose 6.2 `createRemoteJWKSet`, get-jwks 11, read in their sources):
 * - jose: lookup is async and fetches on the request path whenever the cache is older than
 *   cacheMaxAge (no background refresh); Cache-Control is ignored; no stale-if-error at all
 *   (an expired cache plus a failed fetch fails every verification) and so no bound on it;
 *   the body is read with `response.json()` with no size cap; no OIDC discovery, hence no
 *   `issuer` check; no status for readiness, no change events; returns WebCrypto CryptoKeys,
 *   not node KeyObjects; the cooldown counts only from a *successful* fetch, so while the IdP
 *   is down every unknown kid starts a new fetch. (It does refuse redirects and abort the
 *   whole exchange on one deadline — both kept here.)
 * - get-jwks: async only; caches per (alg, kid) with one TTL, so a key the IdP stopped
 *   publishing keeps verifying until that entry's TTL ends; no single flight across kids (a
 *   flood of random kids is a flood of fetches); discovery does not compare the document's
 *   `issuer`, and issuers are normalised with a trailing slash, so exactness is lost; global
 *   fetch follows redirects and reads unbounded bodies; no Cache-Control, no background
 *   refresh, no status; its documented use picks the key source from the token's own `iss`
 *   (nearform/get-jwks#320, TOOLCHAIN.md).
 *
 * Decisions (each has a test in test/tokens/issuers/):
 * - fetched at start() without blocking; an unreachable IdP never throws: `key()` answers
 *   undefined and `status` says why (state `failed`, `lastError.code`) until keys arrive;
 * - freshness = Cache-Control max-age (minus Age), else defaultRefreshIntervalMs, clamped to
 *   [minRefreshIntervalMs, maxRefreshIntervalMs]; the background refresh runs at 80 % of it
 *   (never sooner than minRefreshIntervalMs). The set counts as ready until that refresh has
 *   had its whole deadline, even where it is due at the end of freshness itself (no-cache,
 *   max-age ≤ minRefreshIntervalMs): a refresh on schedule is not "stale"
 *   (fix-jwks-no-cache-flaps-readiness);
 * - every fetch (scheduled, retry, unknown kid) is one single flight; an unknown kid starts one
 *   only when the cooldown (cooldownMs, default minRefreshIntervalMs) has passed since the last
 *   attempt, success or not: a flood of random kids costs one fetch, and while the IdP is down
 *   it is asked once per minRefreshIntervalMs (retry) plus at most once per cooldown;
 * - a failed refresh keeps the last good keys (RFC 5861 stale-if-error) until staleIfErrorMs
 *   after they went stale; then `key()` answers undefined, listeners hear the removal and the
 *   state is `failed`. A document with no usable key counts as a failed refresh, not as
 *   "remove every key";
 * - a successful refresh replaces the set: a key no longer published stops verifying at once;
 * - a reload keeps the set of an unchanged key source and `reconfigure()`s it: no refetch, no
 *   key lost; new `algorithms` re-read the last good document at once
 *   (fix-reload-drops-issuer-keys);
 * - time comes from an injected clock (default: monotonic, epoch-based) and timers from an
 *   injected scheduler, so tests drive hours in microseconds.
 */
import type { KeyObject } from 'node:crypto'
import type { Dispatcher } from 'undici'
import { ConfigError } from '../../errors.js'
import type { RemoteAlgorithm } from './algorithms.js'
import { discover } from './discovery.js'
import { IssuerKeysError, IssuerKeysErrorCode } from './errors.js'
import { fetchJson, sharedKeyFetchDispatcher, type FetchLimits } from './fetch.js'
import { parseJwks, type IgnoredKey, type ParsedJwks, type RemoteKey } from './jwks.js'
import { checkRemoteKeySetOptions, MAX_TIMER_MS, type KeySetLogger, type KeySetTimers, type RemoteKeySetOptions } from './options.js'

/** Refresh when this fraction of the freshness lifetime has passed (retries get the rest). */
const REFRESH_AT_FRACTION = 0.8

export const KeySetState = {
  /** first fetch not finished yet */
  pending: 'pending',
  /** keys within their freshness lifetime, or the refresh due then still within its deadline */
  ready: 'ready',
  /** refresh overdue (failing, or not done within its deadline); the last good keys still verify */
  stale: 'stale',
  /** no key to serve: never fetched successfully, or stale for longer than staleIfErrorMs */
  failed: 'failed',
} as const
export type KeySetState = typeof KeySetState[keyof typeof KeySetState]

export interface RemoteKeySetStatus {
  readonly name: string
  readonly issuer: string
  /** configured or discovered; undefined before discovery succeeded */
  readonly jwksUri: string | undefined
  readonly state: KeySetState
  /** keys usable now */
  readonly keys: number
  readonly kids: readonly string[]
  readonly lastAttemptAt: number | undefined
  readonly lastSuccessAt: number | undefined
  /** end of freshness of the current keys (Cache-Control, clamped) */
  readonly expiresAt: number | undefined
  /** when the current keys stop verifying if no refresh succeeds */
  readonly staleUntil: number | undefined
  readonly nextRefreshAt: number | undefined
  /** the last failure; cleared by a success */
  readonly lastError: { readonly code: string, readonly message: string, readonly at: number } | undefined
  readonly consecutiveFailures: number
  /** fetch attempts (each may be a discovery + a JWKS request) */
  readonly fetches: number
  readonly failures: number
  /** attempts started by an unknown kid */
  readonly unknownKidFetches: number
  /** unknown kids that found the cooldown running and did not fetch */
  readonly unknownKidThrottled: number
  /** keys of the last good document that were left out, and why */
  readonly ignoredKeys: readonly IgnoredKey[]
}

export interface KeySetChange {
  readonly added: readonly RemoteKey[]
  readonly removed: readonly RemoteKey[]
  /** the whole set after the change */
  readonly keys: readonly RemoteKey[]
}
export type KeySetListener = (change: KeySetChange) => void

type FetchTrigger = 'start' | 'schedule' | 'unknown_kid'

const noop = (): void => {}
const silentLogger: KeySetLogger = { debug: noop, info: noop, warn: noop, error: noop }
const realTimers: KeySetTimers = {
  setTimeout: (fn, delayMs) => setTimeout(fn, delayMs).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
}
const monotonicClock = (): number => performance.timeOrigin + performance.now()

/** Lookup tables built once per successful refresh, so `key()` is two Map reads. */
class KeyIndex {
  readonly byKid = new Map<string, Map<string, RemoteKey>>()
  /** alg → the key, when exactly one key of the set serves that alg (tokens without kid) */
  readonly soleByAlg = new Map<string, RemoteKey>()

  constructor (readonly keys: readonly RemoteKey[]) {
    const servers = new Map<string, RemoteKey[]>()
    for (const k of keys) {
      for (const alg of k.algorithms) {
        servers.set(alg, [...(servers.get(alg) ?? []), k])
        if (k.kid === undefined) continue
        let byAlg = this.byKid.get(k.kid)
        if (byAlg === undefined) this.byKid.set(k.kid, byAlg = new Map())
        if (!byAlg.has(alg)) byAlg.set(alg, k)
      }
    }
    for (const [alg, list] of servers) if (list.length === 1) this.soleByAlg.set(alg, list[0]!)
  }
}

const identity = (k: RemoteKey): string => `${k.kid ?? ''}\u0000${k.thumbprint}\u0000${k.algorithms.join(',')}`
/** the key material under its kid, whatever algorithms it serves */
const material = (k: RemoteKey): string => `${k.kid ?? ''}\u0000${k.thumbprint}`
const kids = (list: readonly RemoteKey[]): Array<string | null> => list.map(k => k.kid ?? null)

/**
 * One issuer's key set. Make one per configured issuer per process and share it: every
 * method is safe to call from any number of concurrent requests.
 */
export class RemoteKeySet {
  readonly issuer: string
  #name: string
  /** what reconfigure() may change; the key source (issuer, discovery, jwksUri, allowInsecureHttp) never does */
  #o: RemoteKeySetOptions
  #algorithms: readonly RemoteAlgorithm[]
  #cooldownMs: number
  readonly #clock: () => number
  readonly #timers: KeySetTimers
  readonly #log: KeySetLogger
  readonly #dispatcher: Dispatcher
  readonly #abort = new AbortController()
  readonly #listeners = new Set<KeySetListener>()

  #index: KeyIndex | undefined
  /** the last good JWKS as fetched and its max-age: new `algorithms` re-read it (reconfigure) */
  #document: unknown
  #maxAgeSec: number | undefined
  #expiresAt = 0
  /** ready (not stale) until then: freshness, or the refresh due by then plus its deadline */
  #readyUntil = 0
  #staleUntil = 0
  #jwksUri: URL | undefined
  #discoveryExpiresAt = 0
  #rediscover = false

  #started = false
  #closed = false
  #inflight: Promise<void> | undefined
  #timer: unknown
  #nextFetchAt: number | undefined

  #lastAttemptAt: number | undefined
  #lastSuccessAt: number | undefined
  #lastError: RemoteKeySetStatus['lastError']
  #consecutiveFailures = 0
  #fetches = 0
  #failures = 0
  #unknownKidFetches = 0
  #unknownKidThrottled = 0
  #ignored: readonly IgnoredKey[] = []
  #ignoredLogged = '[]'

  /** Throws ConfigError for unusable options (the config loader should have caught them). */
  constructor (options: RemoteKeySetOptions) {
    const problems = checkRemoteKeySetOptions(options)
    if (problems.length > 0) throw new ConfigError(problems, `issuer ${JSON.stringify(options.name)}`)
    this.#o = { ...options, algorithms: [...options.algorithms] }
    this.#name = options.name
    this.issuer = options.issuer
    this.#algorithms = options.algorithms as RemoteAlgorithm[]
    this.#cooldownMs = options.cooldownMs ?? options.minRefreshIntervalMs
    this.#clock = options.clock ?? monotonicClock
    this.#timers = options.timers ?? realTimers
    this.#log = options.logger ?? silentLogger
    this.#dispatcher = options.dispatcher ?? sharedKeyFetchDispatcher()
    if (options.jwksUri !== undefined) this.#jwksUri = new URL(options.jwksUri)
  }

  /** the issuer's name in gateway.yaml (a reload may rename it) */
  get name (): string { return this.#name }

  /** Starts the first fetch and the refresh schedule; returns at once, never throws. */
  start (): void {
    if (this.#started || this.#closed) return
    this.#started = true
    this.#cycle('start') // never rejects: failures land in status
  }

  /**
   * Hot path, no I/O: the key that verifies `alg` under `kid`; without a kid, the only key of
   * the set that verifies `alg`, if there is exactly one. Undefined for an unknown kid, an
   * algorithm that is not pinned, before the first fetch and after the stale-if-error bound.
   */
  key (kid: string | undefined, alg: string): KeyObject | undefined {
    return this.remoteKey(kid, alg)?.key
  }

  /**
   * The same lookup, answering the whole entry: its PEM (what fast-jwt takes), thumbprint and
   * algorithms. An unchanged key keeps its entry object across refreshes, so a compiled
   * verifier can be cached per entry (a WeakMap) and is dropped with it.
   */
  remoteKey (kid: string | undefined, alg: string): RemoteKey | undefined {
    const index = this.#index
    if (index === undefined || this.#clock() > this.#staleUntil) return undefined
    return kid === undefined ? index.soleByAlg.get(alg) : index.byKid.get(kid)?.get(alg)
  }

  /**
   * For a token whose kid is unknown: joins the running fetch, or starts one if the cooldown
   * (cooldownMs since the last attempt) is over; otherwise answers false at once.
   * True when the kid is known afterwards. Never rejects.
   */
  async refetchForUnknownKid (kid: string): Promise<boolean> {
    if (this.#knows(kid)) return true
    if (!this.#started || this.#closed) return false
    if (this.#inflight === undefined && this.#coolingDown()) {
      this.#unknownKidThrottled++
      return false
    }
    await this.#cycle('unknown_kid')
    return this.#knows(kid)
  }

  /** Readiness and metrics read this; computed from the clock, so it is never out of date. */
  get status (): RemoteKeySetStatus {
    const now = this.#clock()
    const usable = this.#usable(now)
    return {
      name: this.name,
      issuer: this.issuer,
      jwksUri: this.#jwksUri?.href,
      state: this.#state(now),
      keys: usable?.keys.length ?? 0,
      kids: usable?.keys.flatMap(k => k.kid === undefined ? [] : [k.kid]) ?? [],
      lastAttemptAt: this.#lastAttemptAt,
      lastSuccessAt: this.#lastSuccessAt,
      expiresAt: this.#index === undefined ? undefined : this.#expiresAt,
      staleUntil: this.#index === undefined ? undefined : this.#staleUntil,
      nextRefreshAt: this.#started && !this.#closed ? this.#nextFetchAt : undefined,
      lastError: this.#lastError,
      consecutiveFailures: this.#consecutiveFailures,
      fetches: this.#fetches,
      failures: this.#failures,
      unknownKidFetches: this.#unknownKidFetches,
      unknownKidThrottled: this.#unknownKidThrottled,
      ignoredKeys: this.#ignored,
    }
  }

  /** The keys usable now (empty before the first fetch and after the stale bound). */
  currentKeys (): readonly RemoteKey[] {
    return this.#usable(this.#clock())?.keys ?? []
  }

  /**
   * Called after every change of the set: keys added or withdrawn by a refresh, or all of
   * them dropped at the stale-if-error bound. A removed key's handle is dead before the
   * listeners run (cached verifications of it stop verifying, KeySetRegistry closes the
   * WebSockets opened with its tokens). Returns the unsubscribe function.
   */
  onChange (listener: KeySetListener): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  /** Resolves when the fetch running now (if any) has finished; for tests and boot waits. */
  whenSettled (): Promise<void> {
    return this.#inflight ?? Promise.resolve()
  }

  /** Stops the schedule and aborts a running fetch. The keys in memory stay readable. */
  close (): void {
    if (this.#closed) return
    this.#closed = true
    this.#disarm()
    this.#abort.abort()
    this.#listeners.clear()
  }

  /**
   * A reload's settings for the same key source (issuer, discovery, jwksUri, allowInsecureHttp;
   * another source needs another set). The keys, the last good document, the schedule's
   * history and the counters stay: a reload neither refetches nor drops keys the set has
   * (fix-reload-drops-issuer-keys). Timings are counted again from the last fetch under the
   * new values: a fetch now if the new refresh interval is already over, the keys dropped now
   * if the new staleIfError has already ended. New `algorithms` re-read the last good
   * document at once: a key no pinned algorithm accepts any more stops verifying (its handle
   * dies, listeners hear it), a key still accepted keeps its handle — tokens it verified stay
   * valid and the WebSockets they opened stay open. The caller verifies with the new pins
   * from the same moment (an ExternalIssuer refuses an unpinned `alg` before any key lookup).
   * clock, timers, logger and dispatcher stay the constructor's. Throws ConfigError for
   * unusable options, before changing anything.
   */
  reconfigure (options: RemoteKeySetOptions): void {
    const problems = checkRemoteKeySetOptions(options)
    if (problems.length > 0) throw new ConfigError(problems, `issuer ${JSON.stringify(options.name)}`)
    const o = this.#o
    if (options.issuer !== o.issuer || options.discovery !== o.discovery || options.jwksUri !== o.jwksUri ||
      (options.allowInsecureHttp === true) !== (o.allowInsecureHttp === true)) {
      throw new TypeError(`issuer ${JSON.stringify(options.name)}: another key source needs another RemoteKeySet`)
    }
    const repin = options.algorithms.join(',') !== this.#algorithms.join(',')
    const now = this.#clock()
    this.#expireIfDue(now) // under the old bound first: a reload never revives dropped keys
    this.#o = { ...options, algorithms: [...options.algorithms] }
    this.#name = options.name
    this.#algorithms = this.#o.algorithms as RemoteAlgorithm[]
    this.#cooldownMs = options.cooldownMs ?? options.minRefreshIntervalMs
    if (this.#closed) return
    if (this.#lastSuccessAt !== undefined) this.#setFreshness(this.#lastSuccessAt)
    if (this.#lastError !== undefined) this.#nextFetchAt = this.#retryAt(now)
    if (repin) this.#repin(now)
    this.#expireIfDue(now)
    this.#log.info({ issuer: this.name, algorithms: this.#algorithms, keys: this.#index?.keys.length ?? 0 }, 'external issuer: settings reloaded, keys kept')
    this.#arm()
  }

  #usable (now: number): KeyIndex | undefined {
    return this.#index !== undefined && now <= this.#staleUntil ? this.#index : undefined
  }

  #knows (kid: string): boolean {
    return this.#usable(this.#clock())?.byKid.has(kid) === true
  }

  #coolingDown (): boolean {
    return this.#lastAttemptAt !== undefined && this.#clock() < this.#lastAttemptAt + this.#cooldownMs
  }

  #state (now: number): KeySetState {
    if (this.#usable(now) !== undefined) return now <= this.#readyUntil ? KeySetState.ready : KeySetState.stale
    return this.#lastError !== undefined || this.#lastSuccessAt !== undefined ? KeySetState.failed : KeySetState.pending
  }

  /** Freshness lifetime of a document, clamped to the configured interval bounds. */
  #lifetimeMs (maxAgeSec: number | undefined): number {
    const ms = maxAgeSec === undefined ? this.#o.defaultRefreshIntervalMs : maxAgeSec * 1000
    return Math.min(this.#o.maxRefreshIntervalMs, Math.max(this.#o.minRefreshIntervalMs, ms))
  }

  /** The longest one fetch cycle may take: with discovery, a discovery request may come first. */
  #cycleDeadlineMs (): number {
    return this.#o.fetchTimeoutMs * (this.#o.discovery ? 2 : 1)
  }

  /**
   * Freshness of the keys fetched at `fetchedAt`, and (unless refreshes are failing) the next
   * refresh. The refresh is due at 80 % of the lifetime but never sooner than
   * minRefreshIntervalMs, so with no-cache or a short max-age it is due when freshness ends:
   * the set stays ready until that refresh has had its deadline, and stale-if-error counts
   * from there (with staleIfErrorMs 0 the keys must not vanish while it runs).
   */
  #setFreshness (fetchedAt: number): void {
    const lifetimeMs = this.#lifetimeMs(this.#maxAgeSec)
    const refreshInMs = Math.max(this.#o.minRefreshIntervalMs, Math.floor(lifetimeMs * REFRESH_AT_FRACTION))
    this.#expiresAt = fetchedAt + lifetimeMs
    this.#readyUntil = fetchedAt + Math.max(lifetimeMs, refreshInMs + this.#cycleDeadlineMs())
    this.#staleUntil = this.#readyUntil + this.#o.staleIfErrorMs
    if (this.#lastError === undefined) this.#nextFetchAt = fetchedAt + refreshInMs
  }

  /** after a failure: once the retry interval has passed, counted from the last attempt's start */
  #retryAt (now: number): number {
    return Math.max(now, (this.#lastAttemptAt ?? now) + this.#o.minRefreshIntervalMs)
  }

  /** The single flight: every caller while a fetch runs gets the same promise. Never rejects. */
  #cycle (trigger: FetchTrigger): Promise<void> {
    if (this.#inflight !== undefined) return this.#inflight
    this.#disarm()
    this.#lastAttemptAt = this.#clock()
    this.#fetches++
    if (trigger === 'unknown_kid') this.#unknownKidFetches++
    this.#inflight = this.#fetchAndApply()
      .catch((err: unknown) => {
        try { this.#onFailure(err) } catch { /* a throwing logger must not become an unhandled rejection */ }
      })
      .finally(() => {
        this.#inflight = undefined
        this.#arm()
      })
    return this.#inflight
  }

  async #fetchAndApply (): Promise<void> {
    const limits: FetchLimits = {
      dispatcher: this.#dispatcher,
      timeoutMs: this.#o.fetchTimeoutMs,
      maxBytes: this.#o.maxResponseBytes,
      signal: this.#abort.signal,
    }
    const insecure = this.#o.allowInsecureHttp === true
    let jwksUri = this.#jwksUri
    if (this.#o.discovery && (jwksUri === undefined || this.#rediscover || this.#clock() >= this.#discoveryExpiresAt)) {
      const found = await discover(this.issuer, limits, insecure)
      if (jwksUri?.href !== found.jwksUri.href) this.#log.info({ issuer: this.name, jwksUri: found.jwksUri.href }, 'external issuer: jwks_uri discovered')
      jwksUri = this.#jwksUri = found.jwksUri
      this.#discoveryExpiresAt = this.#clock() + this.#lifetimeMs(found.maxAgeSec)
      this.#rediscover = false
    }
    try {
      const fetched = await fetchJson(jwksUri as URL, limits)
      this.#apply(parseJwks(fetched.body, this.#algorithms, this.#o.maxKeys), fetched.body, fetched.maxAgeSec)
    } catch (err) {
      // the jwks_uri may have moved: ask the discovery document again next time
      this.#rediscover = this.#o.discovery
      throw err
    }
  }

  #apply (parsed: ParsedJwks, document: unknown, maxAgeSec: number | undefined): void {
    if (this.#closed) return
    const now = this.#clock()
    this.#expireIfDue(now)
    const reuse = new Map((this.#index?.keys ?? []).map(k => [identity(k), k]))
    // an unchanged key keeps its object, so identity-keyed caches in the verifier stay valid
    const keys = parsed.keys.map(k => reuse.get(identity(k)) ?? k)
    this.#document = document
    this.#maxAgeSec = maxAgeSec
    this.#lastSuccessAt = now
    this.#lastError = undefined
    this.#consecutiveFailures = 0
    this.#setFreshness(now)
    this.#logIgnored(parsed.ignored)

    const lifetimeMs = this.#expiresAt - now
    const { added, removed } = this.#install(keys)
    if (added.length > 0 || removed.length > 0) {
      this.#log.info({ issuer: this.name, keys: keys.length, added: kids(added), removed: kids(removed), lifetimeMs }, 'external issuer: keys updated')
      this.#emit({ added, removed, keys })
    } else {
      this.#log.debug({ issuer: this.name, keys: keys.length, lifetimeMs }, 'external issuer: keys unchanged')
    }
  }

  /**
   * The last good document read again for new `algorithms` (reconfigure). A key still
   * accepted keeps its object when its algorithms are the same, else its handle. When no key
   * is accepted any more the set is empty, as after the stale-if-error bound, and a fetch is
   * due (the IdP may publish a key for the new algorithms).
   */
  #repin (now: number): void {
    if (this.#index === undefined) return // nothing to re-read: the next fetch uses the new pins
    let parsed: ParsedJwks
    try {
      // the document passed maxKeys when it was fetched; a lower maxKeys applies to the next fetch
      parsed = parseJwks(this.#document, this.#algorithms, Number.MAX_SAFE_INTEGER)
    } catch (err) {
      const e = err instanceof IssuerKeysError ? err : new IssuerKeysError(IssuerKeysErrorCode.invalidJwks, String(err), err)
      this.#lastError = { code: e.code, message: e.message, at: now }
      this.#nextFetchAt = this.#retryAt(now)
      const { removed } = this.#install([])
      this.#log.warn({ issuer: this.name, algorithms: this.#algorithms, removed: kids(removed), code: e.code },
        'external issuer: no key of its JWKS is usable for the reloaded algorithms; its tokens are refused until a fetch brings one')
      this.#emit({ added: [], removed, keys: [] })
      return
    }
    const exact = new Map(this.#index.keys.map(k => [identity(k), k]))
    const same = new Map(this.#index.keys.map(k => [material(k), k]))
    const keys = parsed.keys.map(k => {
      const kept = exact.get(identity(k))
      if (kept !== undefined) return kept
      const before = same.get(material(k))
      if (before === undefined) return k
      same.delete(material(k)) // one handle, one key: its withdrawal must kill it
      return { ...k, handle: before.handle }
    })
    this.#logIgnored(parsed.ignored)
    const { added, removed } = this.#install(keys)
    if (added.length > 0 || removed.length > 0) {
      this.#log.info({ issuer: this.name, keys: keys.length, added: kids(added), removed: kids(removed) }, 'external issuer: keys re-read for the reloaded algorithms')
      this.#emit({ added, removed, keys })
    }
  }

  /**
   * Makes `keys` the set (none: no set). A key whose handle no key of the new set carries is
   * dead before anyone hears of it; `added` and `removed` count handles, so a key re-pinned to
   * other algorithms is neither.
   */
  #install (keys: readonly RemoteKey[]): { added: RemoteKey[], removed: RemoteKey[] } {
    const previous = this.#index?.keys ?? []
    const before = new Set(previous.map(k => k.handle))
    const after = new Set(keys.map(k => k.handle))
    const added = keys.filter(k => !before.has(k.handle))
    const removed = previous.filter(k => !after.has(k.handle))
    this.#index = keys.length === 0 ? undefined : new KeyIndex(keys)
    for (const k of removed) k.handle.alive = false
    return { added, removed }
  }

  #onFailure (err: unknown): void {
    if (this.#closed) return
    const e = err instanceof IssuerKeysError
      ? err
      : new IssuerKeysError(IssuerKeysErrorCode.invalidJwks, `unexpected error while reading the keys: ${String(err)}`, err)
    const now = this.#clock()
    this.#lastError = { code: e.code, message: e.message, at: now }
    this.#consecutiveFailures++
    this.#failures++
    this.#nextFetchAt = this.#retryAt(now)
    this.#log.warn({
      issuer: this.name,
      code: e.code,
      err: e.message,
      consecutiveFailures: this.#consecutiveFailures,
      state: this.#state(now),
      staleUntil: this.#index === undefined ? undefined : this.#staleUntil,
    }, 'external issuer: could not fetch its keys')
    this.#expireIfDue(now)
  }

  /** Drops keys past the stale-if-error bound, once, and says so. */
  #expireIfDue (now: number): void {
    if (this.#index === undefined || now <= this.#staleUntil) return
    const { removed } = this.#install([])
    this.#log.error({ issuer: this.name, removed: kids(removed), lastError: this.#lastError?.code },
      'external issuer: keys expired after failing refreshes; its tokens are refused until a fetch succeeds')
    this.#emit({ added: [], removed, keys: [] })
  }

  #logIgnored (ignored: readonly IgnoredKey[]): void {
    this.#ignored = ignored
    const signature = JSON.stringify(ignored)
    if (signature === this.#ignoredLogged) return // once per distinct document, not per refresh
    this.#ignoredLogged = signature
    for (const i of ignored) {
      const level = i.reason === 'private_key_material' ? 'error' : 'warn'
      this.#log[level]({ issuer: this.name, kid: i.kid ?? null, index: i.index, reason: i.reason },
        i.reason === 'private_key_material'
          ? 'external issuer publishes PRIVATE key material in its JWKS; the key is ignored, tell the IdP owners'
          : 'external issuer: a key of its JWKS is ignored')
    }
  }

  #emit (change: KeySetChange): void {
    for (const listener of this.#listeners) {
      try {
        listener(change)
      } catch (err) {
        this.#log.error({ issuer: this.name, err: String(err) }, 'external issuer: a key change listener threw')
      }
    }
  }

  /** One timer: the next fetch, or the stale bound when that comes first. */
  #arm (): void {
    if (!this.#started || this.#closed || this.#inflight !== undefined) return
    this.#disarm()
    const now = this.#clock()
    let at = this.#nextFetchAt ?? now
    if (this.#index !== undefined && this.#staleUntil + 1 < at) at = this.#staleUntil + 1
    this.#timer = this.#timers.setTimeout(() => { this.#tick() }, Math.min(MAX_TIMER_MS, Math.max(0, at - now)))
  }

  #disarm (): void {
    if (this.#timer === undefined) return
    this.#timers.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  #tick (): void {
    this.#timer = undefined
    if (this.#closed) return
    const now = this.#clock()
    this.#expireIfDue(now)
    if ((this.#nextFetchAt ?? now) <= now) this.#cycle('schedule') // never rejects
    else this.#arm()
  }
}
