/**
 * Revocations written inside the caller's transaction: the state change (session
 * revoked, credentials version bumped) and the feed entries (revocations rows + NOTIFY)
 * commit together or not at all.
 *
 * How long an entry must live — until no token it covers can still pass verification, on
 * any gateway of the fleet, whatever configuration each one ran when the token was signed or
 * runs when it is checked (a reload may lengthen accessTokenTtl; replicas in a rolling change
 * differ; an identity provider's token is accepted with that issuer's skew). So entries are
 * sized by the limits every configuration is held to (config/checks), not by one TTL:
 * - jti: the token's `exp` plus the largest clock skew any issuer may be given (5 min);
 * - session: now + the longest lifetime of a gateway token (1 h) + that skew (no new access
 *   token of a revoked session can be issued, so the latest one already issued ends by then);
 * - user cut-off: the same, for every token with `iat` <= the cut-off.
 * An entry outlives its tokens by at most an hour: a few bytes per revocation, for a
 * revocation that never lapses early (fix-revocation-outlives-every-token).
 */
import type { RevocationEntry } from '../pipeline/denylist.js'
import type { RevocationEventReason } from '../security-events.js'
import type { StoreQueries } from './store.js'
import { MAX_ACCESS_TOKEN_TTL_SEC, MAX_CLOCK_SKEW_SEC } from '../config/checks/tokens.js'

export interface RevocationTiming {
  /** the longest a token an entry covers can live (exp − iat) */
  tokenLifetimeSec: number
  /** the largest clock tolerance it is accepted with: until exp + this */
  clockSkewSec: number
}

/** what every revocation is sized by: the limits of any configuration, see above */
export const REVOCATION_TIMING: Readonly<RevocationTiming> = Object.freeze({ tokenLifetimeSec: MAX_ACCESS_TOKEN_TTL_SEC, clockSkewSec: MAX_CLOCK_SKEW_SEC })

/** the reason stored on the session row (`revoke_reason`, shown by `sessions list`) */
export const RevokeReason = {
  logout: 'logout',
  logoutAll: 'logout_all',
  admin: 'admin',
  refreshTokenReuse: 'refresh_token_reuse',
  passwordChanged: 'password_changed',
  userDisabled: 'user_disabled',
} as const
export type RevokeReasonName = typeof RevokeReason[keyof typeof RevokeReason]

/** the same reason as a security event names it */
export function eventReason (reason: RevokeReasonName): RevocationEventReason {
  return reason === RevokeReason.refreshTokenReuse ? 'reuse' : reason
}

const nowSecOf = (nowMs: number): number => Math.floor(nowMs / 1000)

function sessionEntry (sid: string, nowMs: number, timing: RevocationTiming): RevocationEntry {
  return { kind: 'session', value: sid, expiresAtSec: nowSecOf(nowMs) + timing.tokenLifetimeSec + timing.clockSkewSec }
}

/** revokes one session; false when unknown or already revoked (then nothing is written) */
export async function revokeSessionTx (tx: StoreQueries, sid: string, nowMs: number, reason: RevokeReasonName, timing: RevocationTiming): Promise<boolean> {
  const changed = await tx.revokeSession(sid, new Date(nowMs), reason)
  if (changed) await tx.insertRevocation(sessionEntry(sid, nowMs, timing), new Date(nowMs))
  return changed
}

/**
 * Revokes every session of a user and every access token issued to them up to now, and
 * bumps their credentials version, so that a login or a refresh that read the user
 * before this transaction cannot create or extend a session after it (issue 9 item 2:
 * the login re-reads the version under a row lock in the transaction that creates its
 * session; this UPDATE of the user row waits for it, or it waits for this one).
 *
 * Two kinds of entry cover the access tokens:
 * - one `session` entry per revoked session: a token of that session is refused
 *   whatever its `iat`, so a replica whose clock runs ahead (signing with an `iat` after
 *   the cut-off) cannot slip a token of a revoked session past it;
 * - one `user` cut-off at the current second, inclusive (the Denylist refuses
 *   iat <= cut-off): a token of the same second, even signed just after, is refused. It
 *   covers tokens whose session is already gone from the table (purged after its
 *   absolute expiry) and tokens without a `sid`.
 * The cut-off is deliberately NOT moved forward by the clock skew: every session that
 * existed at the cut-off is already refused by its own entry, and a session made after
 * it has passed the credentials-version check, so it is legitimate. A cut-off at
 * now + skew would instead refuse, for up to `clockSkew`, the access tokens of the user's
 * next login (log out everywhere, log in again at once → 401 token_revoked until then).
 * Returns the session ids revoked.
 */
export async function revokeUserTx (tx: StoreQueries, userId: string, nowMs: number, reason: RevokeReasonName, timing: RevocationTiming): Promise<string[]> {
  const at = new Date(nowMs)
  // users before sessions: the same lock order as a login (user FOR SHARE, then its insert)
  await tx.bumpCredentialsVersion(userId, at)
  const sids = await tx.revokeUserSessions(userId, at, reason)
  for (const sid of sids) await tx.insertRevocation(sessionEntry(sid, nowMs, timing), at)
  const nowSec = nowSecOf(nowMs)
  await tx.insertRevocation({
    kind: 'user',
    value: userId,
    issuedBeforeSec: nowSec,
    expiresAtSec: nowSec + timing.tokenLifetimeSec + timing.clockSkewSec,
  }, at)
  return sids
}

/** denylists one access token until it expires; nothing is written for an expired one */
export async function revokeJtiTx (tx: StoreQueries, jti: string, expSec: number, nowMs: number, timing: RevocationTiming): Promise<boolean> {
  const expiresAtSec = expSec + timing.clockSkewSec
  if (expiresAtSec < nowSecOf(nowMs)) return false
  await tx.insertRevocation({ kind: 'jti', value: jti, expiresAtSec }, new Date(nowMs))
  return true
}
