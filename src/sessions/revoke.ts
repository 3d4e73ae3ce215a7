/**
 * Revocations written inside the caller's transaction: the state change (session
 * revoked) and the feed entry (revocations row + NOTIFY) commit together or not at all.
 *
 * How long an entry must live — until no token it covers can still pass verification:
 * - jti: the token's `exp` plus the verifier's clock skew;
 * - session: now + access TTL + skew (no new access token of a revoked session can be
 *   issued, so the latest one already issued expires by then);
 * - user cut-off: the same, for every token with `iat` <= now.
 */
import type { RevocationEntry } from '../pipeline/denylist.js'
import type { StoreQueries } from './store.js'

export interface RevocationTiming {
  accessTokenTtlSec: number
  /** the verifier's clock tolerance: a token is accepted until exp + this */
  clockSkewSec: number
}

export const RevokeReason = {
  logout: 'logout',
  logoutAll: 'logout_all',
  admin: 'admin',
  refreshTokenReuse: 'refresh_token_reuse',
  passwordChanged: 'password_changed',
  userDisabled: 'user_disabled',
} as const
export type RevokeReasonName = typeof RevokeReason[keyof typeof RevokeReason]

const nowSecOf = (nowMs: number): number => Math.floor(nowMs / 1000)

/** revokes one session; false when unknown or already revoked (then nothing is written) */
export async function revokeSessionTx (tx: StoreQueries, sid: string, nowMs: number, reason: RevokeReasonName, timing: RevocationTiming): Promise<boolean> {
  const changed = await tx.revokeSession(sid, new Date(nowMs), reason)
  if (changed) {
    await tx.insertRevocation({
      kind: 'session',
      value: sid,
      expiresAtSec: nowSecOf(nowMs) + timing.accessTokenTtlSec + timing.clockSkewSec,
    }, new Date(nowMs))
  }
  return changed
}

/**
 * Revokes every session of a user and every access token issued to them up to now.
 * The cut-off is inclusive of the current second (the Denylist checks iat <= cut-off),
 * so a token issued in this same second, even just after, is refused too: erring on
 * the side of revoking. Returns the session ids revoked.
 */
export async function revokeUserTx (tx: StoreQueries, userId: string, nowMs: number, reason: RevokeReasonName, timing: RevocationTiming): Promise<string[]> {
  const sids = await tx.revokeUserSessions(userId, new Date(nowMs), reason)
  const nowSec = nowSecOf(nowMs)
  const entry: RevocationEntry = {
    kind: 'user',
    value: userId,
    issuedBeforeSec: nowSec,
    expiresAtSec: nowSec + timing.accessTokenTtlSec + timing.clockSkewSec,
  }
  await tx.insertRevocation(entry, new Date(nowMs))
  return sids
}

/** denylists one access token until it expires; nothing is written for an expired one */
export async function revokeJtiTx (tx: StoreQueries, jti: string, expSec: number, nowMs: number, timing: RevocationTiming): Promise<boolean> {
  const expiresAtSec = expSec + timing.clockSkewSec
  if (expiresAtSec < nowSecOf(nowMs)) return false
  await tx.insertRevocation({ kind: 'jti', value: jti, expiresAtSec }, new Date(nowMs))
  return true
}
