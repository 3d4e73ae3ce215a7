/**
 * A quota on logouts that revoke an identity provider's token (fix-idp-logout-floods-denylist).
 *
 * A logout with an IdP's access token denylists that token until it expires: a row in the
 * store, a notification, an entry in every replica's memory. The gateway's own tokens cost a
 * login (argon2, throttled) each; an IdP's cost the gateway nothing — whoever can get tokens
 * from a trusted provider at its rate (a client-credentials grant, a self-service signup, the
 * provider itself) could grow every replica's denylist and the revocations table without bound
 * (reproduced: 1,500 logouts → 1,500 entries in 4.5 s, each kept for up to the issuer's
 * maxTokenLifetime).
 *
 * So each such logout is counted, in the store (shared by every replica), in the login
 * throttle's table, state machine and bookkeeping (throttle.ts `countAttempt`): per issuer and subject, and
 * per issuer. Beyond either limit the logout is refused whole — 429 `too_many_attempts` with
 * Retry-After, nothing revoked, nothing else ended — so a client knows its token was not
 * revoked, and the denylist grows by at most FOREIGN_REVOCATION_QUOTA.perIssuer entries per
 * window per issuer. A person logs out a handful of times a day; the limits are far above that.
 * The gateway's own tokens are not counted (a login bounds them).
 */
import { createHash } from 'node:crypto'
import type { StoreQueries } from './store.js'
import { ThrottleKind } from './store.js'
import { countAttempt, type ThrottleRule } from './throttle.js'

export const FOREIGN_REVOCATION_QUOTA = Object.freeze({
  /** revocations of one subject's tokens per window (one person, one client of the provider) */
  perSubject: 20,
  /** revocations of one issuer's tokens per window, whoever the subjects */
  perIssuer: 2_000,
  windowSec: 900,
})

const RULES = ((): { subject: ThrottleRule, issuer: ThrottleRule } => {
  const q = FOREIGN_REVOCATION_QUOTA
  // a refused logout waits for the rest of the window; no lockout beyond it
  const rule = (limit: number): ThrottleRule => ({ limit, windowMs: q.windowSec * 1000, lockoutMs: q.windowSec * 1000, maxLockoutMs: q.windowSec * 1000 })
  return { subject: rule(q.perSubject), issuer: rule(q.perIssuer) }
})()

/** fixed-size keys (the table takes 64 characters): `i:` + the issuer's hash, `s:` + the subject's */
function keyOf (prefix: 'i' | 's', ...parts: string[]): string {
  return `${prefix}:${createHash('sha256').update(parts.join('\0')).digest('base64url')}`
}

/**
 * Counts one revocation of `issuer`'s token for `sub` inside the logout's transaction; returns
 * how long to wait (seconds) when refused, undefined when allowed. The issuer's row is locked
 * before the subject's in every transaction, so two logouts never wait on each other in a
 * cycle; a login's counters are other rows.
 */
export async function countForeignRevocation (tx: StoreQueries, issuer: string, sub: string | undefined, nowMs: number): Promise<number | undefined> {
  const kind = ThrottleKind.foreignRevocation
  const issuerKey = keyOf('i', issuer)
  const keys = [{ kind, key: issuerKey }, { kind, key: keyOf('s', issuer, sub ?? '') }]
  const refusal = await countAttempt(tx, keys, (row) => row.key === issuerKey ? RULES.issuer : RULES.subject, nowMs, FOREIGN_REVOCATION_QUOTA.windowSec * 1000)
  return refusal?.retryAfterSec
}
