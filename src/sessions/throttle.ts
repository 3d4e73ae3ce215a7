/**
 * Login throttling, in memory, per replica (OWASP Authentication Cheat Sheet, "Login
 * Throttling"). Two dimensions:
 * - per account: 5 failures in 15 min lock it, for 1 min, doubling on each further
 *   lock (up to 1 h) until a quiet window passes — slows a guesser on one account;
 * - per client IP: 50 failures in 15 min lock the address — slows a sprayer trying one
 *   password on many accounts.
 * The caller asks check() BEFORE verifying the password: while locked even the right
 * password is refused, otherwise the lock would be an oracle. Memory is bounded: each
 * table keeps at most `maxEntries` keys and drops the least recently touched.
 * Pure: the clock is injected.
 */

export interface ThrottleRule {
  maxFailures: number
  windowSec: number
  /** first lockout; each further lockout within a window doubles it */
  lockoutSec: number
  maxLockoutSec: number
}

export interface LoginThrottleOptions {
  account?: Partial<ThrottleRule>
  ip?: Partial<ThrottleRule>
  /** per table; the oldest entries are evicted beyond it */
  maxEntries?: number
  clock?: () => number
}

export const DEFAULT_ACCOUNT_RULE: ThrottleRule = Object.freeze({ maxFailures: 5, windowSec: 900, lockoutSec: 60, maxLockoutSec: 3600 })
export const DEFAULT_IP_RULE: ThrottleRule = Object.freeze({ maxFailures: 50, windowSec: 900, lockoutSec: 900, maxLockoutSec: 3600 })
export const DEFAULT_THROTTLE_MAX_ENTRIES = 100_000

export type ThrottleDecision = { allowed: true } | { allowed: false, retryAfterSec: number, scope: 'account' | 'ip' }

interface Counter {
  failures: number
  windowStartMs: number
  lockedUntilMs: number
  /** consecutive lockouts; reset after a full quiet window */
  lockouts: number
}

class Table {
  readonly #map = new Map<string, Counter>()
  readonly #rule: ThrottleRule
  readonly #max: number
  constructor (rule: ThrottleRule, max: number) {
    this.#rule = rule
    this.#max = max
  }

  lockedForMs (key: string, nowMs: number): number {
    const c = this.#map.get(key)
    return c === undefined ? 0 : Math.max(0, c.lockedUntilMs - nowMs)
  }

  fail (key: string, nowMs: number): void {
    const rule = this.#rule
    let c = this.#map.get(key)
    if (c !== undefined) this.#map.delete(key) // re-inserted below: Map order = recency
    if (c === undefined) {
      c = { failures: 0, windowStartMs: nowMs, lockedUntilMs: 0, lockouts: 0 }
    } else if (nowMs - c.windowStartMs >= rule.windowSec * 1000 && nowMs >= c.lockedUntilMs) {
      // a quiet window since the last lock ends the backoff streak
      const quiet = nowMs - Math.max(c.lockedUntilMs, c.windowStartMs) >= rule.windowSec * 1000
      c = { failures: 0, windowStartMs: nowMs, lockedUntilMs: 0, lockouts: quiet ? 0 : c.lockouts }
    }
    c.failures++
    if (c.failures >= rule.maxFailures) {
      const lockMs = Math.min(rule.lockoutSec * 2 ** c.lockouts, rule.maxLockoutSec) * 1000
      c.lockouts++
      c.lockedUntilMs = Math.max(c.lockedUntilMs, nowMs + lockMs)
      c.failures = 0
      c.windowStartMs = nowMs
    }
    this.#map.set(key, c)
    if (this.#map.size > this.#max) {
      const oldest = this.#map.keys().next().value
      if (oldest !== undefined) this.#map.delete(oldest)
    }
  }

  reset (key: string): void {
    this.#map.delete(key)
  }

  get size (): number {
    return this.#map.size
  }
}

export class LoginThrottle {
  readonly #accounts: Table
  readonly #ips: Table
  readonly #clock: () => number

  constructor (opts: LoginThrottleOptions = {}) {
    const max = opts.maxEntries ?? DEFAULT_THROTTLE_MAX_ENTRIES
    this.#accounts = new Table({ ...DEFAULT_ACCOUNT_RULE, ...opts.account }, max)
    this.#ips = new Table({ ...DEFAULT_IP_RULE, ...opts.ip }, max)
    this.#clock = opts.clock ?? Date.now
  }

  /** account names are compared case-insensitively, so `Alice` and `alice` share a counter */
  static accountKey (username: string): string {
    return username.normalize('NFKC').toLowerCase()
  }

  check (username: string, ip: string | undefined): ThrottleDecision {
    const now = this.#clock()
    const accountMs = this.#accounts.lockedForMs(LoginThrottle.accountKey(username), now)
    const ipMs = ip === undefined ? 0 : this.#ips.lockedForMs(ip, now)
    if (accountMs === 0 && ipMs === 0) return { allowed: true }
    return { allowed: false, retryAfterSec: Math.ceil(Math.max(accountMs, ipMs) / 1000), scope: accountMs >= ipMs ? 'account' : 'ip' }
  }

  recordFailure (username: string, ip: string | undefined): void {
    const now = this.#clock()
    this.#accounts.fail(LoginThrottle.accountKey(username), now)
    if (ip !== undefined) this.#ips.fail(ip, now)
  }

  /** a successful login clears the account's counter (not the address's: a sprayer may succeed once) */
  recordSuccess (username: string): void {
    this.#accounts.reset(LoginThrottle.accountKey(username))
  }

  get size (): { accounts: number, ips: number } {
    return { accounts: this.#accounts.size, ips: this.#ips.size }
  }
}
