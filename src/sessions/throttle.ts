/**
 * Login throttling in the store, shared by every replica and worker (OWASP Authentication
 * Cheat Sheet, "Login Throttling"; issue 9 item 1). Three counters per attempt:
 * - account (`perAccount`): failed attempts on one account name — slows a guesser;
 * - ip (`perIp`): failed attempts from one client address (IPv6 per /64) — slows a sprayer
 *   trying one password on many accounts;
 * - ip_total (`perIpTotal`): every attempt from one address, successful ones included —
 *   credential stuffing with a list of correct passwords succeeds most of the time.
 *
 * The attempt is COUNTED BEFORE the password is verified, under the row locks of one
 * transaction (store.lockThrottleRows), so N concurrent guesses on one account get at most
 * `perAccount` verifications, whatever the replica they land on. A success then gives
 * back what it took (account: the counter restarts; ip: the attempt was not a failure).
 * An attempt that is refused counts nowhere: a locked address cannot lock accounts by
 * spraying them. Reaching a limit locks the key for `lockout`, doubling with each further
 * lockout up to `maxLockout`, until a quiet window passes. While locked even the right
 * password is refused, otherwise the lock would be an oracle.
 *
 * Bounded: keys are fixed-size (the account name is hashed, addresses aggregated), and
 * rows that hold nothing any more are pruned, with `maxEntries` as a hard cap.
 */
import { throttleAddressKey } from './client-address.js'
import type { SessionsLogger, Store, StoreQueries, ThrottleKind, ThrottleRow } from './store.js'
import { userNameKey } from './user-name-key.js'

/** the `login.throttle` settings (GatewayConfig['login']['throttle']) */
export interface LoginThrottleSettings {
  perAccount: number
  perIp: number
  perIpTotal: number
  windowSec: number
  /** first lockout; each further lockout within a window doubles it */
  lockoutSec: number
  maxLockoutSec: number
  maxEntries: number
}

export const DEFAULT_LOGIN_THROTTLE: Readonly<LoginThrottleSettings> = Object.freeze({
  perAccount: 5,
  perIp: 50,
  perIpTotal: 300,
  windowSec: 900,
  lockoutSec: 60,
  maxLockoutSec: 3600,
  maxEntries: 100_000,
})

/** how often a replica prunes the table (and at the latest after maxEntries / 10 attempts) */
export const DEFAULT_THROTTLE_PRUNE_INTERVAL_MS = 60_000

export interface LoginThrottleOptions {
  store: Store
  settings?: Partial<LoginThrottleSettings> | undefined
  clock?: () => number
  logger?: SessionsLogger | undefined
  pruneIntervalMs?: number
}

/** the counters of a login (the table also holds foreign-revocations.ts's) */
export type LoginThrottleKind = Exclude<ThrottleKind, 'foreign_revocation'>

/** which limit refused an attempt (for the security event and the metric, never the client) */
export type ThrottleLimit = LoginThrottleKind

/** what admit() took, handed back to succeeded() */
export interface AttemptTicket {
  accountKey: string
  ipKey: string | undefined
}

export type AdmitDecision =
  | { allowed: true, ticket: AttemptTicket }
  | { allowed: false, retryAfterSec: number, limit: ThrottleLimit }

export interface ThrottleRule {
  limit: number
  windowMs: number
  lockoutMs: number
  maxLockoutMs: number
}

export type ThrottleStep =
  | { allowed: true, row: ThrottleRow }
  /** `row` is the state to write when `changed` (a lock starts now) */
  | { allowed: false, retryAfterMs: number, row: ThrottleRow, changed: boolean }

const MAX_DOUBLINGS = 30

function forgetAt (row: Omit<ThrottleRow, 'forgetAt'>, windowMs: number): Date {
  // after this the row means nothing: its window is over, and a whole quiet window has
  // passed since its lock ended, so the backoff streak is over too
  return new Date(Math.max(row.windowStart.getTime(), row.lockedUntil?.getTime() ?? 0) + windowMs)
}

/**
 * One counter's decision for one attempt at `nowMs` — pure, the whole state machine:
 * locked → refused; window over → restart (the streak too after a quiet window); limit
 * reached → refused and locked now (doubling); otherwise counted.
 */
export function throttleStep (current: ThrottleRow, rule: ThrottleRule, nowMs: number): ThrottleStep {
  const lockedUntilMs = current.lockedUntil?.getTime() ?? 0
  if (lockedUntilMs > nowMs) return { allowed: false, retryAfterMs: lockedUntilMs - nowMs, row: current, changed: false }
  let row = current
  const windowStartMs = row.windowStart.getTime()
  if (nowMs - windowStartMs >= rule.windowMs) {
    const quiet = nowMs - Math.max(lockedUntilMs, windowStartMs) >= rule.windowMs
    row = { ...row, windowStart: new Date(nowMs), attempts: 0, lockedUntil: null, lockouts: quiet ? 0 : row.lockouts }
  }
  if (row.attempts >= rule.limit) {
    const lockMs = Math.min(rule.lockoutMs * 2 ** Math.min(row.lockouts, MAX_DOUBLINGS), rule.maxLockoutMs)
    const locked = { ...row, windowStart: new Date(nowMs), attempts: 0, lockedUntil: new Date(nowMs + lockMs), lockouts: row.lockouts + 1 }
    return { allowed: false, retryAfterMs: lockMs, row: { ...locked, forgetAt: forgetAt(locked, rule.windowMs) }, changed: true }
  }
  const counted = { ...row, attempts: row.attempts + 1 }
  return { allowed: true, row: { ...counted, forgetAt: forgetAt(counted, rule.windowMs) } }
}

/** why countAttempt refused: the counter that holds the attempt back longest */
export interface CountRefusal<K extends ThrottleKind> {
  kind: K
  retryAfterSec: number
}

/**
 * Counts one attempt on each key, each under its rule, inside the caller's transaction (the
 * rows locked in the order given: every transaction of one purpose takes them in one order, so
 * none wait on each other in a cycle). Allowed by every counter: each is counted and saved.
 * Refused by any: only a lock that starts now is saved, the other counters are untouched (a
 * refused attempt counts nowhere), and the counter with the longest wait is named.
 * Shared by the login throttle and the quota on foreign revocations (foreign-revocations.ts).
 */
export async function countAttempt<K extends ThrottleKind> (
  tx: Pick<StoreQueries, 'lockThrottleRows' | 'saveThrottleRows'>,
  keys: ReadonlyArray<{ kind: K, key: string }>,
  ruleOf: (row: ThrottleRow) => ThrottleRule,
  nowMs: number,
  windowMs: number
): Promise<CountRefusal<K> | undefined> {
  const at = new Date(nowMs)
  const rows = await tx.lockThrottleRows(keys, at, new Date(nowMs + windowMs))
  const steps = rows.map((row) => ({ kind: row.kind as K, step: throttleStep(row, ruleOf(row), nowMs) }))
  let worst: { kind: K, retryAfterMs: number } | undefined
  for (const { kind, step } of steps) {
    if (!step.allowed && (worst === undefined || step.retryAfterMs > worst.retryAfterMs)) worst = { kind, retryAfterMs: step.retryAfterMs }
  }
  if (worst === undefined) {
    await tx.saveThrottleRows(steps.map(({ step }) => step.row), at)
    return undefined
  }
  await tx.saveThrottleRows(steps.flatMap(({ step }) => !step.allowed && step.changed ? [step.row] : []), at)
  return { kind: worst.kind, retryAfterSec: Math.max(1, Math.ceil(worst.retryAfterMs / 1000)) }
}

export class LoginThrottle {
  readonly #store: Store
  readonly #clock: () => number
  readonly #log: SessionsLogger | undefined
  readonly #pruneIntervalMs: number
  readonly settings: Readonly<LoginThrottleSettings>
  readonly #rules: Record<LoginThrottleKind, ThrottleRule>
  #lastPruneMs = 0
  #admitsSincePrune = 0
  #pruning: Promise<number> | undefined

  constructor (opts: LoginThrottleOptions) {
    this.#store = opts.store
    this.#clock = opts.clock ?? Date.now
    this.#log = opts.logger
    this.#pruneIntervalMs = opts.pruneIntervalMs ?? DEFAULT_THROTTLE_PRUNE_INTERVAL_MS
    this.settings = Object.freeze({ ...DEFAULT_LOGIN_THROTTLE, ...opts.settings })
    for (const [k, v] of Object.entries(this.settings)) {
      if (!Number.isInteger(v) || v < 1) throw new TypeError(`login.throttle.${k} must be an integer >= 1`)
    }
    const s = this.settings
    const rule = (limit: number): ThrottleRule => ({ limit, windowMs: s.windowSec * 1000, lockoutMs: s.lockoutSec * 1000, maxLockoutMs: s.maxLockoutSec * 1000 })
    this.#rules = { account: rule(s.perAccount), ip: rule(s.perIp), ip_total: rule(s.perIpTotal) }
    this.#lastPruneMs = this.#clock()
  }

  /** the account key: the user name's key (user-name-key.ts), the one createUser checks */
  static accountKey (username: string): string {
    return userNameKey(username)
  }

  /**
   * Counts one attempt, before any password work. Refused: the caller answers 429 with
   * Retry-After. Allowed: the caller verifies, and calls succeeded(ticket) on success.
   * Throws StoreUnavailableError when the store cannot count (the login fails closed).
   */
  async admit (username: string, address: string | undefined): Promise<AdmitDecision> {
    const nowMs = this.#clock()
    const ticket: AttemptTicket = { accountKey: LoginThrottle.accountKey(username), ipKey: throttleAddressKey(address) }
    // fixed kind order (account, ip, ip_total): every transaction locks rows in this order
    const keys: Array<{ kind: LoginThrottleKind, key: string }> = [{ kind: 'account', key: ticket.accountKey }]
    if (ticket.ipKey !== undefined) keys.push({ kind: 'ip', key: ticket.ipKey }, { kind: 'ip_total', key: ticket.ipKey })
    const refusal = await this.#store.transaction(async (tx) =>
      await countAttempt(tx, keys, (row) => this.#rules[row.kind as LoginThrottleKind], nowMs, this.settings.windowSec * 1000))
    this.#maybePrune(nowMs)
    return refusal === undefined ? { allowed: true, ticket } : { allowed: false, retryAfterSec: refusal.retryAfterSec, limit: refusal.kind }
  }

  /**
   * A verified login gives back what admit() counted (account restarts; ip: not a failure).
   * `q`: the transaction that creates the session, to save the login a round trip.
   */
  async succeeded (ticket: AttemptTicket, q: Pick<StoreQueries, 'recordLoginSuccess'> = this.#store): Promise<void> {
    await q.recordLoginSuccess(ticket.accountKey, ticket.ipKey, new Date(this.#clock()))
  }

  /** drops rows that hold nothing any more, then enforces maxEntries; returns how many went */
  async prune (): Promise<number> {
    // after one in flight (it may have started with an older clock reading)
    await this.#pruning?.catch(() => {})
    const run = this.#store.pruneThrottle(new Date(this.#clock()), this.settings.maxEntries)
    this.#pruning = run
    try {
      return await run
    } finally {
      if (this.#pruning === run) this.#pruning = undefined
    }
  }

  #maybePrune (nowMs: number): void {
    this.#admitsSincePrune++
    if (this.#pruning !== undefined) return
    if (nowMs - this.#lastPruneMs < this.#pruneIntervalMs && this.#admitsSincePrune < this.settings.maxEntries / 10) return
    this.#lastPruneMs = nowMs
    this.#admitsSincePrune = 0
    this.prune().catch((err: unknown) => {
      this.#log?.warn({ err: { message: (err as Error).message } }, 'login throttle: prune failed')
    })
  }
}
