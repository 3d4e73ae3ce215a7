/**
 * Refresh rotation with reuse detection (DESIGN.md lifecycle step 3), in one transaction
 * per call, the session row locked: concurrent refreshes of one session queue, and the
 * second one then sees the rotation of the first (READ COMMITTED re-check).
 *
 * Session-format tokens (refresh-tokens.ts) against the session row:
 * - the current token → rotated: a new current, the presented one becomes `prev` with the
 *   new one sealed under it for the grace window;
 * - `prev` within the grace window → the same successor again (a second tab racing);
 * - any other token of this family (its tag verifies) or `prev` after the window → the
 *   token was copied: the whole session is revoked (OAuth 2.0 Security BCP, RFC 9700
 *   §4.14.2) — unless the last rotation is itself within the grace window, then it is
 *   the client racing its own tabs and the token is only refused;
 * - a token that is not of this family → unknown (it proves nothing about the session).
 * Legacy tokens (a `refresh_tokens` row each) keep their rules and move their session to
 * the session format at their next rotation.
 */
import type { SecurityEvents } from '../security-events.js'
import { refreshTokenLanded } from './commit-outcome.js'
import { CommitOutcomeUnknownError } from './errors.js'
import type { ParsedRefreshToken } from './refresh-tokens.js'
import {
  hasFamilyTag, hashRefreshToken, newRefreshKey, newSessionRefreshToken, openSuccessor, sealSuccessor,
} from './refresh-tokens.js'
import { revokeSessionTx, RevokeReason } from './revoke.js'
import type { ServiceContext } from './service-context.js'
import { clip, MAX_IP_CHARS, MAX_USER_AGENT_CHARS } from './service-context.js'
import type { SessionRecord, SessionRefreshState, StoreQueries, UserRecord } from './store.js'

export interface RotationClient {
  ip?: string | undefined
  userAgent?: string | undefined
}

export type RefreshOutcome =
  | { kind: 'rotated', user: UserRecord, session: SessionRecord, refreshToken: string, refreshExpiresAt: Date }
  | { kind: 'invalid', reason: string, reuse?: { sid: string, sub: string } }

interface Step {
  tx: StoreQueries
  ctx: ServiceContext
  nowMs: number
  presented: string
  presentedHash: string
  client: RotationClient
}

/** refusals common to both formats, once the session and user are known */
function sessionRefusal (session: SessionRecord, refresh: SessionRefreshState, user: UserRecord, nowMs: number): string | undefined {
  if (session.revokedAt !== null) return 'session_revoked'
  if (session.expiresAt.getTime() <= nowMs) return 'session_expired'
  if (user.disabled) return 'user_disabled'
  // a session made before a revocation of all the user's sessions that it escaped
  if (refresh.credentialsVersion !== user.credentialsVersion) return 'credentials_changed'
  return undefined
}

async function reuse (s: Step, session: SessionRecord, user: UserRecord): Promise<RefreshOutcome> {
  // committed with the transaction, before the caller throws
  await revokeSessionTx(s.tx, session.id, s.nowMs, RevokeReason.refreshTokenReuse, s.ctx.timing)
  return { kind: 'invalid', reason: 'reuse_detected', reuse: { sid: session.id, sub: user.id } }
}

/** issues the next session-format token and writes the rotation on the session row */
async function rotate (s: Step, session: SessionRecord, refresh: SessionRefreshState, user: UserRecord, prevIssuedAt: Date | null): Promise<RefreshOutcome> {
  const key = refresh.key ?? newRefreshKey()
  const next = newSessionRefreshToken(session.id, key)
  const nextExpiresAt = s.ctx.refreshExpiry(s.nowMs, session.expiresAt)
  await s.tx.rotateSessionRefresh(session.id, {
    key,
    hash: hashRefreshToken(next),
    issuedAt: new Date(s.nowMs),
    expiresAt: nextExpiresAt,
    prevHash: s.presentedHash,
    prevIssuedAt,
    prevSealed: sealSuccessor(s.presented, next),
    prevSealedUntil: new Date(s.nowMs + s.ctx.options.reuseGraceSec * 1000),
  }, new Date(s.nowMs), clip(s.client.ip, MAX_IP_CHARS), clip(s.client.userAgent, MAX_USER_AGENT_CHARS))
  return { kind: 'rotated', user, session, refreshToken: next, refreshExpiresAt: nextExpiresAt }
}

async function touch (s: Step, sid: string): Promise<void> {
  await s.tx.touchSession(sid, new Date(s.nowMs), clip(s.client.ip, MAX_IP_CHARS), clip(s.client.userAgent, MAX_USER_AGENT_CHARS))
}

async function rotateSessionToken (s: Step, parsed: Extract<ParsedRefreshToken, { format: 'session' }>): Promise<RefreshOutcome> {
  const locked = await s.tx.lockSession(parsed.sid)
  if (locked === undefined) return { kind: 'invalid', reason: 'unknown_token' }
  const { session, refresh, user } = locked
  const isCurrent = refresh.hash === s.presentedHash
  const isPrev = !isCurrent && refresh.prevHash === s.presentedHash
  // the tag is checked only when needed, and a legacy session (key null) has no tagged tokens
  if (!isCurrent && !isPrev && (refresh.key === null || !hasFamilyTag(parsed, refresh.key))) return { kind: 'invalid', reason: 'unknown_token' }
  const refusal = sessionRefusal(session, refresh, user, s.nowMs)
  if (refusal !== undefined) return { kind: 'invalid', reason: refusal }
  const graceMs = s.ctx.options.reuseGraceSec * 1000

  if (isCurrent) {
    if (refresh.expiresAt === null || refresh.expiresAt.getTime() <= s.nowMs) return { kind: 'invalid', reason: 'token_expired' }
    return await rotate(s, session, refresh, user, refresh.issuedAt)
  }
  if (isPrev) {
    // `prev` was spent when the current token was issued
    const spentAtMs = refresh.issuedAt?.getTime() ?? 0
    if (s.nowMs - spentAtMs <= graceMs) {
      const sealedLive = refresh.prevSealed !== null && (refresh.prevSealedUntil?.getTime() ?? 0) >= s.nowMs
      const plaintext = sealedLive ? openSuccessor(s.presented, refresh.prevSealed!) : undefined
      if (plaintext !== undefined && hashRefreshToken(plaintext) === refresh.hash && (refresh.expiresAt?.getTime() ?? 0) > s.nowMs) {
        // a second tab racing the first: the same successor, still unused (it is current)
        await touch(s, session.id)
        return { kind: 'rotated', user, session, refreshToken: plaintext, refreshExpiresAt: refresh.expiresAt! }
      }
      return { kind: 'invalid', reason: 'successor_already_used' }
    }
    return await reuse(s, session, user)
  }
  // an older token of this family: it was spent at or before `prev` was issued
  if (refresh.prevIssuedAt !== null && s.nowMs - refresh.prevIssuedAt.getTime() <= graceMs) {
    // the successor moved on within the grace window: the client's own tabs racing
    return { kind: 'invalid', reason: 'successor_already_used' }
  }
  return await reuse(s, session, user)
}

async function rotateLegacyToken (s: Step): Promise<RefreshOutcome> {
  const ctx = await s.tx.lockRefreshToken(s.presentedHash)
  if (ctx === undefined) return { kind: 'invalid', reason: 'unknown_token' }
  const { token, session, refresh, user } = ctx
  const refusal = sessionRefusal(session, refresh, user, s.nowMs)
  if (refusal !== undefined) return { kind: 'invalid', reason: refusal }

  if (token.spentAt !== null) {
    const spentForMs = s.nowMs - token.spentAt.getTime()
    if (spentForMs <= s.ctx.options.reuseGraceSec * 1000 && token.successorHash !== null && token.successorSealed !== null) {
      const plaintext = openSuccessor(s.presented, token.successorSealed)
      // the successor is the session's current token (session format) or, for a rotation
      // made before the upgrade, another legacy row; it must still be unused
      let successorExpiresAt: Date | null = null
      if (token.successorHash === refresh.hash) {
        successorExpiresAt = refresh.expiresAt
      } else {
        const row = await s.tx.getRefreshToken(token.successorHash)
        if (row !== undefined && row.spentAt === null) successorExpiresAt = row.expiresAt
      }
      if (plaintext !== undefined && successorExpiresAt !== null && successorExpiresAt.getTime() > s.nowMs) {
        await touch(s, session.id)
        return { kind: 'rotated', user, session, refreshToken: plaintext, refreshExpiresAt: successorExpiresAt }
      }
      return { kind: 'invalid', reason: 'successor_already_used' }
    }
    return await reuse(s, session, user)
  }
  if (token.expiresAt.getTime() <= s.nowMs) return { kind: 'invalid', reason: 'token_expired' }

  // the live legacy token: its successor is a session-format token; the row is kept
  // (spent, with the sealed successor) so the grace path and reuse detection still work
  // for it until it expires
  const outcome = await rotate(s, session, refresh, user, token.createdAt)
  if (outcome.kind === 'rotated') {
    await s.tx.spendRefreshToken(s.presentedHash, new Date(s.nowMs), hashRefreshToken(outcome.refreshToken), sealSuccessor(s.presented, outcome.refreshToken))
  }
  return outcome
}

export async function refreshFlow (ctx: ServiceContext, parsed: ParsedRefreshToken, client: RotationClient): Promise<RefreshOutcome> {
  const nowMs = ctx.clock()
  const attempt: { outcome?: RefreshOutcome } = {}
  let outcome: RefreshOutcome
  try {
    outcome = await ctx.store.transaction(async (tx): Promise<RefreshOutcome> => {
      const s: Step = { tx, ctx, nowMs, presented: parsed.token, presentedHash: hashRefreshToken(parsed.token), client }
      attempt.outcome = parsed.format === 'session' ? await rotateSessionToken(s, parsed) : await rotateLegacyToken(s)
      return attempt.outcome
    })
  } catch (err) {
    // the COMMIT's answer was lost: the client gets the new pair if the rotation landed
    const planned = attempt.outcome
    if (!(err instanceof CommitOutcomeUnknownError) || planned?.kind !== 'rotated' ||
      !await refreshTokenLanded(ctx.store, planned.session.id, planned.refreshToken)) throw err
    outcome = planned
  }
  if (outcome.kind === 'invalid' && outcome.reuse !== undefined) emitReuse(ctx.events, outcome.reuse, client)
  return outcome
}

function emitReuse (events: SecurityEvents, r: { sid: string, sub: string }, client: RotationClient): void {
  events.emit('refresh_token_reuse', { sid: r.sid, sub: r.sub, ip: client.ip })
  events.emit('session_revoked', { sid: r.sid, sub: r.sub, reason: 'reuse' })
}
