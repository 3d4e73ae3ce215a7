/**
 * Keeps this replica's in-memory Denylist equal to the `revocations` table, so the hot
 * path never asks the database (DESIGN.md, lifecycle step 5):
 * 1. subscribe (LISTEN on a dedicated connection), buffering what arrives;
 * 2. load every live entry and `replace` the denylist, then apply the buffer —
 *    subscribing first means nothing committed between load and listen is missed;
 * 3. `add` each notification as it arrives.
 * NOTIFY is not queued for absent listeners: when the connection is lost, everything
 * sent meanwhile is gone, so a reconnect (with exponential backoff and jitter) always
 * repeats steps 1–2. While disconnected the old entries stay in force: stale
 * revocations are safe, forgotten ones are not. Expired entries are pruned on a timer.
 *
 * A connection can also die SILENTLY (a NAT or load balancer drops an idle flow, a
 * failover leaves a half-open socket): no error, no end, just no more notifications.
 * Two defences (issue 9 item 5):
 * - a heartbeat every `heartbeatIntervalMs`: a NOTIFY to itself on the listen connection
 *   that must come back within the interval. It proves the whole path (socket, server,
 *   notification queue), and since notifications arrive in commit order, everything
 *   committed before it has been delivered: the denylist is known current as of the
 *   heartbeat. No answer → the connection is dropped, then reconnect and full reload;
 * - a reconcile every `reconcileIntervalMs`: a full reload even when all seems fine.
 *
 * A reconnect can stall as silently (a flow that goes half-open right after the handshake,
 * a paused backend, a session-mode pool with no free server connection: the startup is
 * answered, LISTEN never is), and the heartbeat only runs once connected. So every
 * connection attempt — subscribe, load, apply — has a deadline of two heartbeat intervals,
 * the bound within which a heartbeat notices a dead connection: past it the attempt is
 * abandoned (its listener closed, whenever it arrives; its load applied nowhere) and the
 * loop tries again with backoff (fix-feed-reconnect-stalls). An attempt that ran out of time
 * gives the next one twice as long, up to MAX_ATTEMPT_TIMEOUT_MS, so a reload that is only
 * slow (a very large table) still completes. The embedded store has no deadline: its
 * subscription is in-process, nothing between it and the database can stall, and an
 * abandoned load would keep its single backend busy ahead of the retry.
 *
 * Readiness (issue 9 item 4): health() says whether to serve. Before the first load the
 * answer is no (fail closed at boot). Afterwards, while reconnecting, the gateway keeps
 * serving with the last denylist ("degraded", with its staleness): a revocation missed
 * meanwhile is bounded by the access-token lifetime, and taking every replica out of the
 * load balancer at once would be a full outage. With `maxStalenessMs` > 0 the answer
 * turns to no once the denylist has been unconfirmed for longer than that.
 */
import type { Denylist, RevocationEntry } from '../pipeline/denylist.js'
import type { SessionsLogger, Store, StoreListener } from './store.js'

export const DEFAULT_PRUNE_INTERVAL_MS = 60_000
export const DEFAULT_RECONNECT_MIN_DELAY_MS = 250
export const DEFAULT_RECONNECT_MAX_DELAY_MS = 10_000
export const DEFAULT_HEARTBEAT_INTERVAL_MS = 5_000
export const DEFAULT_RECONCILE_INTERVAL_MS = 300_000
/**
 * A connection attempt's deadline, in heartbeat intervals: a heartbeat notices a dead
 * connection within two (the wait, then the answer due within one), a stalled reconnect is
 * noticed within as many. With the heartbeat off, DEFAULT_HEARTBEAT_INTERVAL_MS counts.
 */
export const ATTEMPT_TIMEOUT_HEARTBEATS = 2
/** the most an attempt's deadline grows to after attempts that ran out of time (unless two heartbeats are longer) */
export const MAX_ATTEMPT_TIMEOUT_MS = 120_000

export interface RevocationFeedOptions {
  store: Store
  denylist: Denylist
  clock?: () => number
  logger?: SessionsLogger | undefined
  pruneIntervalMs?: number
  reconnectMinDelayMs?: number
  reconnectMaxDelayMs?: number
  /** revocation.heartbeatIntervalMs: a round trip on the listen connection this often, answer due within it; 0 = off */
  heartbeatIntervalMs?: number
  /** revocation.reconcileIntervalMs: a full reload this often even when notifications flow; 0 = off */
  reconcileIntervalMs?: number
  /** revocation.maxStalenessMs: 0 = keep serving with the last denylist; > 0 = not ready once it is staler */
  maxStalenessMs?: number
}

/** the feed's verdict for /readyz and the staleness metric */
export interface FeedHealth {
  /** serve traffic? false before the first load, after close, or when staler than maxStaleness */
  ready: boolean
  /** serving with a denylist that may miss revocations (the feed is reconnecting) */
  degraded: boolean
  /** ms since the denylist was last known current (0 before the first load) */
  stalenessMs: number
  /** why not ready, or why degraded */
  reason?: string
}

export const FeedState = {
  idle: 'idle',
  starting: 'starting',
  ready: 'ready',
  reconnecting: 'reconnecting',
  closed: 'closed',
} as const
export type FeedStateName = typeof FeedState[keyof typeof FeedState]

export interface FeedStatus {
  state: FeedStateName
  /** when the denylist was last rebuilt from the table */
  loadedAt: Date | undefined
  /** full reloads so far (1 after a clean start; +1 per reconnect and per reconcile) */
  reloads: number
  /** heartbeats that came back in time / that did not */
  heartbeats: { ok: number, failed: number }
  /** when the denylist was last known current (a load, or a heartbeat's round trip) */
  currentAt: Date | undefined
  entries: number
  lastError: string | undefined
}

const KINDS = new Set(['jti', 'session', 'user'])

/** a notification payload, or undefined if it is not a well-formed entry */
export function parseRevocationPayload (payload: string): RevocationEntry | undefined {
  let v: unknown
  try {
    v = JSON.parse(payload)
  } catch {
    return undefined
  }
  if (v === null || typeof v !== 'object') return undefined
  const o = v as Record<string, unknown>
  if (typeof o.kind !== 'string' || !KINDS.has(o.kind) || typeof o.value !== 'string' || typeof o.expiresAtSec !== 'number') return undefined
  const entry: RevocationEntry = { kind: o.kind as RevocationEntry['kind'], value: o.value, expiresAtSec: o.expiresAtSec }
  if (typeof o.issuedBeforeSec === 'number') entry.issuedBeforeSec = o.issuedBeforeSec
  return entry
}

export class RevocationFeed {
  readonly #store: Store
  readonly #denylist: Denylist
  readonly #clock: () => number
  readonly #log: SessionsLogger | undefined
  readonly #pruneIntervalMs: number
  readonly #minDelayMs: number
  readonly #maxDelayMs: number
  readonly #heartbeatIntervalMs: number
  readonly #reconcileIntervalMs: number
  readonly #maxStalenessMs: number
  /** undefined: no deadline (the embedded store) */
  readonly #baseAttemptTimeoutMs: number | undefined
  readonly #maxAttemptTimeoutMs: number

  #state: FeedStateName = 'idle'
  #listener: StoreListener | undefined
  #generation = 0
  #lostDuringConnect = false
  /** the next attempt's deadline: the base, doubled after each attempt that ran out of time */
  #attemptTimeoutMs: number | undefined
  #loadedAt: Date | undefined
  #reloads = 0
  #lastError: string | undefined
  #pruneTimer: NodeJS.Timeout | undefined
  #sleep: { timer: NodeJS.Timeout, resolve: () => void } | undefined
  #started: Promise<void> | undefined
  #currentAtMs: number | undefined
  #heartbeatTimer: NodeJS.Timeout | undefined
  #reconcileTimer: NodeJS.Timeout | undefined
  #heartbeats = { ok: 0, failed: 0 }
  /** notifications received while a reconcile reload is in flight, re-applied after it */
  #reconcileBuffer: RevocationEntry[] | undefined

  constructor (opts: RevocationFeedOptions) {
    this.#store = opts.store
    this.#denylist = opts.denylist
    this.#clock = opts.clock ?? Date.now
    this.#log = opts.logger
    this.#pruneIntervalMs = opts.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS
    this.#minDelayMs = opts.reconnectMinDelayMs ?? DEFAULT_RECONNECT_MIN_DELAY_MS
    this.#maxDelayMs = opts.reconnectMaxDelayMs ?? DEFAULT_RECONNECT_MAX_DELAY_MS
    this.#heartbeatIntervalMs = opts.heartbeatIntervalMs ?? DEFAULT_HEARTBEAT_INTERVAL_MS
    this.#reconcileIntervalMs = opts.reconcileIntervalMs ?? DEFAULT_RECONCILE_INTERVAL_MS
    this.#maxStalenessMs = opts.maxStalenessMs ?? 0
    for (const [name, v] of [['heartbeatIntervalMs', this.#heartbeatIntervalMs], ['reconcileIntervalMs', this.#reconcileIntervalMs], ['maxStalenessMs', this.#maxStalenessMs]] as const) {
      if (!Number.isFinite(v) || v < 0) throw new TypeError(`revocation feed option ${name} must be a number >= 0`)
    }
    this.#baseAttemptTimeoutMs = this.#store.kind === 'embedded'
      ? undefined
      : ATTEMPT_TIMEOUT_HEARTBEATS * (this.#heartbeatIntervalMs > 0 ? this.#heartbeatIntervalMs : DEFAULT_HEARTBEAT_INTERVAL_MS)
    this.#maxAttemptTimeoutMs = Math.max(this.#baseAttemptTimeoutMs ?? 0, MAX_ATTEMPT_TIMEOUT_MS)
    this.#attemptTimeoutMs = this.#baseAttemptTimeoutMs
  }

  /** true while listening with a complete denylist; false while (re)connecting */
  get ready (): boolean {
    return this.#state === 'ready'
  }

  get status (): FeedStatus {
    return {
      state: this.#state,
      loadedAt: this.#loadedAt,
      reloads: this.#reloads,
      heartbeats: { ...this.#heartbeats },
      currentAt: this.#currentAtMs === undefined ? undefined : new Date(this.#currentAtMs),
      entries: this.#denylist.size,
      lastError: this.#lastError,
    }
  }

  /**
   * The readiness verdict at `nowMs`. While connected the staleness is the age of the last
   * proof (load or heartbeat), at most about one heartbeat interval; while reconnecting it
   * grows from the last proof before the connection was lost.
   */
  health (nowMs: number = this.#clock()): FeedHealth {
    if (this.#state === 'closed') return { ready: false, degraded: false, stalenessMs: 0, reason: 'revocation feed closed' }
    if (this.#currentAtMs === undefined) {
      return { ready: false, degraded: false, stalenessMs: 0, reason: `revocation feed starting${this.#lastError === undefined ? '' : `: ${this.#lastError}`}` }
    }
    const stalenessMs = Math.max(0, nowMs - this.#currentAtMs)
    if (this.#state === 'ready') return { ready: true, degraded: false, stalenessMs }
    const why = `revocation feed ${this.#state}${this.#lastError === undefined ? '' : `: ${this.#lastError}`}`
    if (this.#maxStalenessMs > 0 && stalenessMs > this.#maxStalenessMs) {
      return { ready: false, degraded: true, stalenessMs, reason: `${why}; denylist unconfirmed for ${Math.round(stalenessMs / 1000)} s (revocation.maxStaleness ${Math.round(this.#maxStalenessMs / 1000)} s)` }
    }
    return { ready: true, degraded: true, stalenessMs, reason: `${why}; serving with the last denylist` }
  }

  /**
   * Resolves once the denylist is loaded and notifications flow; until then it retries
   * with backoff (a database that is down at boot delays readiness, it does not crash).
   * Rejects only if close() is called first.
   */
  async start (): Promise<void> {
    if (this.#started !== undefined) return await this.#started
    this.#state = 'starting'
    this.#pruneTimer = setInterval(() => this.prune(), this.#pruneIntervalMs)
    this.#pruneTimer.unref() // a prune timer must never keep the process alive
    this.#started = this.#connectLoop()
    return await this.#started
  }

  /** drops expired entries now; returns how many */
  prune (): number {
    return this.#denylist.prune(Math.floor(this.#clock() / 1000))
  }

  async close (): Promise<void> {
    if (this.#state === 'closed') return
    this.#state = 'closed'
    this.#generation++
    if (this.#pruneTimer !== undefined) clearInterval(this.#pruneTimer)
    this.#stopTimers()
    if (this.#sleep !== undefined) {
      clearTimeout(this.#sleep.timer)
      this.#sleep.resolve()
    }
    const listener = this.#listener
    this.#listener = undefined
    await listener?.close()
  }

  #isClosed (): boolean {
    return this.#state === 'closed'
  }

  async #connectLoop (): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      if (this.#state === 'closed') throw new Error('revocation feed closed before it was ready')
      try {
        await this.#connectOnce()
        return
      } catch (err) {
        if (this.#isClosed()) throw new Error('revocation feed closed before it was ready')
        this.#lastError = err instanceof Error ? err.message : String(err)
        const base = Math.min(this.#maxDelayMs, this.#minDelayMs * 2 ** Math.min(attempt, 20))
        const delayMs = Math.round(base / 2 + Math.random() * base / 2) // jitter: replicas do not reconnect in lockstep
        this.#log?.warn({ err: { message: this.#lastError, code: (err as { code?: unknown }).code }, attempt, delayMs },
          'revocation feed: cannot connect, retrying')
        await new Promise<void>((resolve) => {
          const timer = setTimeout(() => { this.#sleep = undefined; resolve() }, delayMs)
          this.#sleep = { timer, resolve }
        })
      }
    }
  }

  /**
   * One attempt under its deadline (see the header): when the deadline passes first, the
   * attempt's generation is retired, so whatever it still receives — a listener, a
   * notification, a loss, a loaded snapshot — installs nothing.
   */
  async #connectOnce (): Promise<void> {
    const generation = ++this.#generation
    this.#lostDuringConnect = false
    const timeoutMs = this.#attemptTimeoutMs
    let timer: NodeJS.Timeout | undefined
    const expired = new Promise<never>((_resolve, reject) => {
      if (timeoutMs === undefined) return
      timer = setTimeout(() => {
        if (generation === this.#generation) this.#generation++
        this.#attemptTimeoutMs = Math.min(timeoutMs * 2, this.#maxAttemptTimeoutMs)
        reject(new Error(`connection attempt (connect, LISTEN, reload) did not finish within ${timeoutMs} ms`))
      }, timeoutMs)
      timer.unref()
    })
    expired.catch(() => {}) // rejects at most once, while an await below races it
    try {
      await this.#attempt(generation, expired)
    } finally {
      clearTimeout(timer)
    }
    this.#attemptTimeoutMs = this.#baseAttemptTimeoutMs
  }

  async #attempt (generation: number, expired: Promise<never>): Promise<void> {
    let buffer: RevocationEntry[] | undefined = []
    const subscribing = this.#store.listenRevocations((payload) => {
      if (generation !== this.#generation) return
      const entry = parseRevocationPayload(payload)
      if (entry === undefined) {
        this.#log?.warn({ bytes: payload.length }, 'revocation feed: ignored a malformed notification')
      } else if (buffer !== undefined) {
        buffer.push(entry)
      } else {
        this.#denylist.add(entry)
        this.#reconcileBuffer?.push(entry)
      }
    }, (err) => this.#onLost(generation, err))
    let listener: StoreListener
    try {
      listener = await Promise.race([subscribing, expired])
    } catch (err) {
      // abandoned: a listener that still arrives belongs to no attempt
      subscribing.then(async (late) => { await late.close() }, () => {}).catch(() => {})
      throw err
    }
    let loadStartMs: number
    try {
      // the snapshot is at least as new as this instant: the denylist is current as of it
      loadStartMs = this.#clock()
      // abandoned at the deadline, the load stops at its next page
      const abandon = new AbortController()
      expired.catch(() => { abandon.abort() })
      const loading = this.#store.loadRevocations(new Date(loadStartMs), abandon.signal)
      loading.catch(() => {}) // an abandoned load's failure concerns nobody
      const entries = await Promise.race([loading, expired])
      if (this.#lostDuringConnect || generation !== this.#generation) throw new Error('listen connection lost during reload')
      this.#denylist.replace(entries)
      for (const e of buffer) this.#denylist.add(e)
      buffer = undefined
    } catch (err) {
      await listener.close().catch(() => {})
      throw err
    }
    this.#listener = listener
    this.#loadedAt = new Date(this.#clock())
    this.#currentAtMs = Math.max(this.#currentAtMs ?? 0, loadStartMs)
    this.#reloads++
    this.#lastError = undefined
    this.#state = 'ready'
    this.#startTimers(generation, listener)
    this.#log?.info({ entries: this.#denylist.size, reloads: this.#reloads }, 'revocation feed ready')
  }

  #startTimers (generation: number, listener: StoreListener): void {
    this.#stopTimers()
    if (this.#heartbeatIntervalMs > 0) {
      const beat = (): void => {
        this.#heartbeatTimer = setTimeout(() => {
          if (generation !== this.#generation || this.#state !== 'ready') return
          const sentAtMs = this.#clock()
          listener.ping(this.#heartbeatIntervalMs).then(() => {
            if (generation !== this.#generation) return
            this.#heartbeats.ok++
            this.#currentAtMs = Math.max(this.#currentAtMs ?? 0, sentAtMs)
            beat()
          }, (err: unknown) => {
            if (generation !== this.#generation) return
            this.#heartbeats.failed++
            // the connection may look alive and deliver nothing: drop it, reconnect, reload
            this.#onLost(generation, err instanceof Error ? err : new Error(String(err)))
          })
        }, this.#heartbeatIntervalMs)
        this.#heartbeatTimer.unref()
      }
      beat()
    }
    if (this.#reconcileIntervalMs > 0) {
      this.#reconcileTimer = setInterval(() => {
        if (generation !== this.#generation || this.#state !== 'ready') return
        this.reconcile().catch((err: unknown) => {
          this.#log?.warn({ err: { message: (err as Error).message } }, 'revocation feed: reconcile failed')
        })
      }, this.#reconcileIntervalMs)
      this.#reconcileTimer.unref()
    }
  }

  #stopTimers (): void {
    if (this.#heartbeatTimer !== undefined) clearTimeout(this.#heartbeatTimer)
    if (this.#reconcileTimer !== undefined) clearInterval(this.#reconcileTimer)
    this.#heartbeatTimer = undefined
    this.#reconcileTimer = undefined
  }

  /**
   * Reloads the whole denylist from the table on the live subscription (a missed
   * notification, however it was missed, is repaired). Notifications that arrive during
   * the load are applied again after the replace, so none is lost to the swap. Resolves
   * to false when the feed is not ready (a reconnect reloads anyway).
   */
  async reconcile (): Promise<boolean> {
    if (this.#state !== 'ready' || this.#reconcileBuffer !== undefined) return false
    const generation = this.#generation
    this.#reconcileBuffer = []
    try {
      const loadStartMs = this.#clock()
      const entries = await this.#store.loadRevocations(new Date(loadStartMs))
      if (generation !== this.#generation || this.#state !== 'ready') return false
      this.#denylist.replace(entries)
      for (const e of this.#reconcileBuffer) this.#denylist.add(e)
      this.#currentAtMs = Math.max(this.#currentAtMs ?? 0, loadStartMs)
      this.#loadedAt = new Date(this.#clock())
      this.#reloads++
      return true
    } finally {
      this.#reconcileBuffer = undefined
    }
  }

  #onLost (generation: number, err: Error): void {
    if (this.#state === 'closed' || generation !== this.#generation) return
    if (this.#listener === undefined) {
      // still inside #connectOnce: it will notice and retry
      this.#lostDuringConnect = true
      return
    }
    const listener = this.#listener
    this.#listener = undefined
    this.#stopTimers()
    this.#generation++ // late notifications and pings of the old connection are ignored from here
    listener.close().catch(() => {})
    this.#state = 'reconnecting'
    this.#lastError = err.message
    this.#log?.warn({ err: { message: err.message } }, 'revocation feed: connection lost, reconnecting')
    this.#connectLoop().catch(() => { /* closed while reconnecting */ })
  }
}
