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
 */
import type { Denylist, RevocationEntry } from '../pipeline/denylist.js'
import type { SessionsLogger, Store, StoreListener } from './store.js'

export const DEFAULT_PRUNE_INTERVAL_MS = 60_000
export const DEFAULT_RECONNECT_MIN_DELAY_MS = 250
export const DEFAULT_RECONNECT_MAX_DELAY_MS = 10_000

export interface RevocationFeedOptions {
  store: Store
  denylist: Denylist
  clock?: () => number
  logger?: SessionsLogger | undefined
  pruneIntervalMs?: number
  reconnectMinDelayMs?: number
  reconnectMaxDelayMs?: number
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
  /** full reloads so far (1 after a clean start; +1 per reconnect) */
  reloads: number
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

  #state: FeedStateName = 'idle'
  #listener: StoreListener | undefined
  #generation = 0
  #lostDuringConnect = false
  #loadedAt: Date | undefined
  #reloads = 0
  #lastError: string | undefined
  #pruneTimer: NodeJS.Timeout | undefined
  #sleep: { timer: NodeJS.Timeout, resolve: () => void } | undefined
  #started: Promise<void> | undefined

  constructor (opts: RevocationFeedOptions) {
    this.#store = opts.store
    this.#denylist = opts.denylist
    this.#clock = opts.clock ?? Date.now
    this.#log = opts.logger
    this.#pruneIntervalMs = opts.pruneIntervalMs ?? DEFAULT_PRUNE_INTERVAL_MS
    this.#minDelayMs = opts.reconnectMinDelayMs ?? DEFAULT_RECONNECT_MIN_DELAY_MS
    this.#maxDelayMs = opts.reconnectMaxDelayMs ?? DEFAULT_RECONNECT_MAX_DELAY_MS
  }

  /** true while listening with a complete denylist; false while (re)connecting */
  get ready (): boolean {
    return this.#state === 'ready'
  }

  get status (): FeedStatus {
    return { state: this.#state, loadedAt: this.#loadedAt, reloads: this.#reloads, entries: this.#denylist.size, lastError: this.#lastError }
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

  async #connectOnce (): Promise<void> {
    const generation = ++this.#generation
    this.#lostDuringConnect = false
    let buffer: RevocationEntry[] | undefined = []
    const listener = await this.#store.listenRevocations((payload) => {
      if (generation !== this.#generation) return
      const entry = parseRevocationPayload(payload)
      if (entry === undefined) {
        this.#log?.warn({ bytes: payload.length }, 'revocation feed: ignored a malformed notification')
      } else if (buffer !== undefined) {
        buffer.push(entry)
      } else {
        this.#denylist.add(entry)
      }
    }, (err) => this.#onLost(generation, err))
    try {
      const entries = await this.#store.loadRevocations(new Date(this.#clock()))
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
    this.#reloads++
    this.#lastError = undefined
    this.#state = 'ready'
    this.#log?.info({ entries: this.#denylist.size, reloads: this.#reloads }, 'revocation feed ready')
  }

  #onLost (generation: number, err: Error): void {
    if (this.#state === 'closed' || generation !== this.#generation) return
    if (this.#listener === undefined) {
      // still inside #connectOnce: it will notice and retry
      this.#lostDuringConnect = true
      return
    }
    this.#listener = undefined
    this.#state = 'reconnecting'
    this.#lastError = err.message
    this.#log?.warn({ err: { message: err.message } }, 'revocation feed: connection lost, reconnecting')
    this.#connectLoop().catch(() => { /* closed while reconnecting */ })
  }
}
