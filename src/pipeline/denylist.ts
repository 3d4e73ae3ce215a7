/**
 * The in-memory revocation state every replica checks after a token verifies.
 * Three kinds of entry, each kept only while a token it covers can still be valid:
 * - a `jti` (one access token) until that token's `exp`;
 * - a session id `sid` (every access token of one session) until the latest `exp` it could cover;
 * - a user `sub` with a cut-off: tokens issued (`iat`) at or before it are revoked.
 * Lookups are O(1) Map reads; no I/O. The revocation feed (sessions) fills it.
 */

export const RevocationKind = {
  jti: 'jti',
  session: 'session',
  user: 'user',
} as const
export type RevocationKind = typeof RevocationKind[keyof typeof RevocationKind]

export interface RevocationEntry {
  kind: RevocationKind
  /** the jti, the session id or the user's sub */
  value: string
  /** epoch seconds after which no token the entry covers can be valid: the entry may be forgotten */
  expiresAtSec: number
  /** for kind `user`: tokens with `iat` <= this are revoked (epoch seconds) */
  issuedBeforeSec?: number
}

export interface RevocableClaims {
  jti?: unknown
  sid?: unknown
  sub?: unknown
  iat?: unknown
}

export type RevocationReason = 'token_revoked' | 'session_revoked' | 'user_revoked'

export class Denylist {
  readonly #jtis = new Map<string, number>()
  readonly #sessions = new Map<string, number>()
  /** sub → [issuedBeforeSec, expiresAtSec] */
  readonly #users = new Map<string, [number, number]>()
  readonly #listeners = new Set<() => void>()

  /** called after every change (open WebSockets are re-checked); returns the unsubscribe function */
  onChange (listener: () => void): () => void {
    this.#listeners.add(listener)
    return () => { this.#listeners.delete(listener) }
  }

  #changed (): void {
    for (const l of this.#listeners) l()
  }

  add (entry: RevocationEntry): void {
    this.#add(entry)
    this.#changed()
  }

  #add (entry: RevocationEntry): void {
    if (entry.kind === 'jti') {
      this.#jtis.set(entry.value, Math.max(entry.expiresAtSec, this.#jtis.get(entry.value) ?? 0))
    } else if (entry.kind === 'session') {
      this.#sessions.set(entry.value, Math.max(entry.expiresAtSec, this.#sessions.get(entry.value) ?? 0))
    } else {
      const prev = this.#users.get(entry.value)
      const before = Math.max(entry.issuedBeforeSec ?? entry.expiresAtSec, prev?.[0] ?? 0)
      this.#users.set(entry.value, [before, Math.max(entry.expiresAtSec, prev?.[1] ?? 0)])
    }
  }

  /** replaces the whole state, e.g. after a reload from the database */
  replace (entries: Iterable<RevocationEntry>): void {
    this.#jtis.clear()
    this.#sessions.clear()
    this.#users.clear()
    for (const e of entries) this.#add(e)
    this.#changed()
  }

  /**
   * The reason a verified token is revoked, or undefined when it is not. `jti` is the token's
   * revocation key (VerifiedToken.revocationJti: what a logout of an identity provider's token
   * writes is kept under its issuer, so such a token cannot revoke another issuer's); the bare
   * claim when not given. An identity provider's token is refused under its bare jti too: the
   * fail-closed direction, which keeps what older replicas and an admin revocation without
   * `iss` wrote in force.
   */
  check (claims: RevocableClaims, jti: unknown = claims.jti): RevocationReason | undefined {
    if (this.#jtis.size > 0) {
      if (typeof jti === 'string' && this.#jtis.has(jti)) return 'token_revoked'
      if (jti !== claims.jti && typeof claims.jti === 'string' && this.#jtis.has(claims.jti)) return 'token_revoked'
    }
    if (typeof claims.sid === 'string' && this.#sessions.size > 0 && this.#sessions.has(claims.sid)) return 'session_revoked'
    if (typeof claims.sub === 'string' && this.#users.size > 0) {
      const user = this.#users.get(claims.sub)
      if (user !== undefined && typeof claims.iat === 'number' && claims.iat <= user[0]) return 'user_revoked'
    }
    return undefined
  }

  /** drops entries whose tokens have all expired; returns how many were dropped */
  prune (nowSec: number): number {
    let dropped = 0
    for (const map of [this.#jtis, this.#sessions]) {
      for (const [k, exp] of map) if (exp < nowSec) { map.delete(k); dropped++ }
    }
    for (const [k, [, exp]] of this.#users) if (exp < nowSec) { this.#users.delete(k); dropped++ }
    return dropped
  }

  get size (): number {
    return this.#jtis.size + this.#sessions.size + this.#users.size
  }
}
