/**
 * Refreshes across tabs: one lock per gateway origin, and a channel on which the tab that
 * refreshed (or logged in, or out) tells the others.
 *
 * Why a lock: every tab presents the same refresh cookie. Two tabs refreshing at once
 * present one token twice; the gateway forgives that only within `reuseGrace`, after which
 * it is indistinguishable from theft and revokes the session. Under the lock a tab reads
 * the refresh token (cookie or store) only after the previous holder has stored the
 * successor, so a legitimate client never presents a spent token.
 *
 * Why the channel: to not refresh at all when another tab just did. A tab that had to WAIT
 * for the lock expects the holder's news; BroadcastChannel and Web Locks are separate
 * mechanisms with no ordering between them, so the news may arrive a moment after the
 * lock does: the waiter gives it HANDOFF_WAIT_MS before refreshing itself (which would be
 * safe, only redundant).
 *
 * Without Web Locks (Node 20, insecure origins, old Safari) a lock local to this JS realm
 * is used: clients in one process or tab still share one refresh; separate tabs then rely
 * on the gateway's grace window.
 */
import type { BroadcastChannelFactory, BroadcastChannelLike, LockManagerLike, Timers } from './platform.js'

export const HANDOFF_WAIT_MS = 100

export type CrossTabMessage =
  | { v: 1, type: 'token', accessToken: string, expiresAtMs: number | undefined, lifetimeMs: number | undefined }
  /** `sid`: the session that ended, when known (a tab already on a newer session ignores it) */
  | { v: 1, type: 'ended', reason: string, sid?: string | undefined }

function isMessage (data: unknown): data is CrossTabMessage {
  const m = data as Partial<Record<string, unknown>> | null
  if (m === null || typeof m !== 'object' || m.v !== 1) return false
  const optionalNumber = (x: unknown): boolean => x === undefined || (typeof x === 'number' && Number.isFinite(x))
  if (m.type === 'token') return typeof m.accessToken === 'string' && optionalNumber(m.expiresAtMs) && optionalNumber(m.lifetimeMs)
  return m.type === 'ended' && typeof m.reason === 'string' && (m.sid === undefined || typeof m.sid === 'string')
}

/**
 * A FIFO exclusive lock per name, in this JS realm. Implements the part of Web Locks the
 * SDK uses, `ifAvailable` included. Not reentrant (neither are Web Locks).
 */
export class LocalLocks implements LockManagerLike {
  readonly #queues = new Map<string, { tail: Promise<void>, size: number }>()

  async request<T>(name: string, options: { ifAvailable?: boolean }, callback: (lock: unknown) => T | Promise<T>): Promise<T> {
    let q = this.#queues.get(name)
    if (q !== undefined && options.ifAvailable === true) return await callback(null)
    if (q === undefined) this.#queues.set(name, q = { tail: Promise.resolve(), size: 0 })
    const queue = q
    queue.size++
    const previous = queue.tail
    let release!: () => void
    queue.tail = new Promise<void>((resolve) => { release = resolve })
    try {
      await previous
      return await callback({ name })
    } finally {
      release()
      if (--queue.size === 0) this.#queues.delete(name)
    }
  }
}

/** shared by every client of this realm that finds no Web Locks */
export const realmLocks = new LocalLocks()

const NOT_GRANTED = Symbol('not granted')

export interface CoordinatorOptions {
  key: string
  locks: LockManagerLike
  channel: BroadcastChannelFactory | undefined
  timers: Timers
  onMessage: (message: CrossTabMessage) => void
}

export class Coordinator {
  readonly #lockName: string
  readonly #locks: LockManagerLike
  readonly #channel: BroadcastChannelLike | undefined
  readonly #timers: Timers
  /** waiters for news; called with `true` to give up waiting (close) */
  readonly #wakers = new Set<(giveUp: boolean) => void>()

  constructor (opts: CoordinatorOptions) {
    this.#lockName = `portcullis-refresh:${opts.key}`
    this.#locks = opts.locks
    this.#timers = opts.timers
    this.#channel = opts.channel?.(`portcullis:${opts.key}`)
    this.#channel?.unref?.()
    if (this.#channel !== undefined) {
      this.#channel.onmessage = (event: { data: unknown }) => {
        if (!isMessage(event.data)) return
        opts.onMessage(event.data)
        for (const wake of [...this.#wakers]) wake(false)
      }
    }
  }

  /** runs `fn` under the lock; `contended` says whether another holder went first */
  async withLock<T>(fn: (contended: boolean) => Promise<T>): Promise<T> {
    const first = await this.#locks.request(this.#lockName, { mode: 'exclusive', ifAvailable: true },
      async (lock) => lock === null ? NOT_GRANTED : { value: await fn(false) })
    if (first !== NOT_GRANTED) return first.value
    return await this.#locks.request(this.#lockName, { mode: 'exclusive' }, async () => await fn(true))
  }

  post (message: CrossTabMessage): void {
    try {
      this.#channel?.postMessage(message)
    } catch {
      // a closed channel: the other tabs will find out at their next refresh
    }
  }

  /** resolves when `settled()` holds (checked now and after each message) or after `waitMs` */
  async awaitNews (settled: () => boolean, waitMs = HANDOFF_WAIT_MS): Promise<void> {
    if (this.#channel === undefined || settled()) return
    await new Promise<void>((resolve) => {
      const done = (): void => {
        this.#wakers.delete(wake)
        this.#timers.clearTimeout(timer)
        resolve()
      }
      const wake = (giveUp: boolean): void => { if (giveUp || settled()) done() }
      const timer = this.#timers.setTimeout(done, waitMs)
      this.#wakers.add(wake)
    })
  }

  close (): void {
    if (this.#channel !== undefined) {
      this.#channel.onmessage = null
      this.#channel.close()
    }
    for (const wake of [...this.#wakers]) wake(true)
  }
}
