/**
 * A COMMIT whose answer was lost (CommitOutcomeUnknownError): did the work land? Login and
 * refresh can tell from the data — their transaction put a new refresh token's hash on a
 * session row — so they look, instead of answering 503 "retry" for a rotation that committed:
 * the client would retry with the token the rotation spent, and past the reuse grace that is
 * "theft" and ends the session (fix-commit-answer-lost).
 *
 * The look locks the row (FOR UPDATE, on a fresh pooled connection): while the transaction
 * whose answer was lost still holds it, the look waits — until that transaction commits, or the
 * server rolls it back on seeing its connection go — so what it reads is that transaction's
 * outcome, not a snapshot taken before it. If the row stays locked past the store's
 * lock_timeout, or the store cannot be reached, the outcome stays unknown (false).
 */
import { hashRefreshToken } from './refresh-tokens.js'
import type { Store } from './store.js'

/** true when session `sid` is live and `refreshToken` is its current token */
export async function refreshTokenLanded (store: Store, sid: string, refreshToken: string): Promise<boolean> {
  try {
    const locked = await store.transaction(async (tx) => await tx.lockSession(sid))
    return locked !== undefined && locked.session.revokedAt === null && locked.refresh.hash === hashRefreshToken(refreshToken)
  } catch {
    return false
  }
}
