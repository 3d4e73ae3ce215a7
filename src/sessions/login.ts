/**
 * Login (DESIGN.md lifecycle step 1): throttle → verify → create the session.
 *
 * Order matters twice:
 * - the throttle COUNTS the attempt before argon2 (throttle.ts), so concurrency cannot
 *   buy extra guesses;
 * - the user is read (with its credentials version) before verifying, and the version is
 *   read again, under a row lock, in the transaction that creates the session. A password
 *   change, disable, logout-all or admin revoke that committed in between bumped it: the
 *   login is refused instead of creating a session that would outlive that revocation.
 */
import { refreshTokenLanded } from './commit-outcome.js'
import { CommitOutcomeUnknownError, InvalidCredentialsError, LoginThrottledError } from './errors.js'
import { checkPasswordLength, hashPassword, needsRehash, verifyPassword } from './passwords.js'
import { hashRefreshToken, newRefreshKey, newSessionId, newSessionRefreshToken } from './refresh-tokens.js'
import type { ServiceContext } from './service-context.js'
import { clip, MAX_IP_CHARS, MAX_USER_AGENT_CHARS } from './service-context.js'
import type { UserRecord } from './store.js'
import type { AttemptTicket } from './throttle.js'
import { hasControlCharacter } from '../text.js'

/** no stored name can be longer (users.ts: 128); a longer one is not looked up at all */
const MAX_LOOKUP_NAME_CHARS = 256

export interface LoginClient {
  ip?: string | undefined
  userAgent?: string | undefined
}

export interface LoginResult {
  user: UserRecord
  sid: string
  refreshToken: string
  refreshExpiresAt: Date
}

export async function loginFlow (ctx: ServiceContext, username: string, password: string, client: LoginClient): Promise<LoginResult> {
  checkPasswordLength(password)
  const events = ctx.events
  let ticket: AttemptTicket | undefined
  if (ctx.throttle !== undefined) {
    const decision = await ctx.throttle.admit(username, client.ip)
    if (!decision.allowed) {
      events.emit('login_throttled', { user: username, ip: client.ip, limit: decision.limit, retryAfterSec: decision.retryAfterSec })
      throw new LoginThrottledError(decision.retryAfterSec, decision.limit)
    }
    ticket = decision.ticket
  }

  // a name no user can have (too long, or with a control character, which PostgreSQL
  // refuses in text: NUL) is an unknown user, never a store error
  const user = username.length > MAX_LOOKUP_NAME_CHARS || hasControlCharacter(username) ? undefined : await ctx.store.findUserByName(username)
  // the unknown user is verified against the dummy hash: equal cost, no enumeration
  const ok = await verifyPassword(user?.passwordHash, password)
  if (user === undefined || !ok || user.disabled) {
    events.emit('login_failed', { user: username, ip: client.ip, reason: user === undefined ? 'unknown_user' : !ok ? 'bad_password' : 'user_disabled' })
    throw new InvalidCredentialsError()
  }
  if (needsRehash(user.passwordHash)) {
    // upgrade hashes made with older parameters while we hold the plaintext; the
    // credentials version stays: it is the same password
    await ctx.store.updateUser(user.name, { passwordHash: await hashPassword(password) }, new Date(ctx.clock()))
  }

  const nowMs = ctx.clock()
  const sid = newSessionId()
  const refreshKey = newRefreshKey()
  const refreshToken = newSessionRefreshToken(sid, refreshKey)
  const sessionExpiresAt = new Date(nowMs + ctx.options.sessionMaxAgeSec * 1000)
  const refreshExpiresAt = ctx.refreshExpiry(nowMs, sessionExpiresAt)
  const created = await ctx.store.transaction(async (tx) => {
    // FOR SHARE: concurrent logins of one user do not wait for each other, but a
    // revocation (which UPDATEs the row) waits for this transaction, or this one for it
    const current = await tx.lockUserShared(user.id)
    if (current === undefined || current.disabled || current.credentialsVersion !== user.credentialsVersion) return false
    await tx.insertSession({
      id: sid,
      userId: user.id,
      createdAt: new Date(nowMs),
      expiresAt: sessionExpiresAt,
      userAgent: clip(client.userAgent, MAX_USER_AGENT_CHARS),
      ip: clip(client.ip, MAX_IP_CHARS),
      credentialsVersion: current.credentialsVersion,
      refreshKey,
      refreshHash: hashRefreshToken(refreshToken),
      refreshExpiresAt,
    })
    // the attempt is given back in the same transaction (one round trip less per login)
    if (ctx.throttle !== undefined && ticket !== undefined) await ctx.throttle.succeeded(ticket, tx)
    return true
  }).catch(async (err: unknown) => {
    // the COMMIT's answer was lost: the session was made if its token is on the row
    if (err instanceof CommitOutcomeUnknownError && await refreshTokenLanded(ctx.store, sid, refreshToken)) return true
    throw err
  })
  if (!created) {
    events.emit('login_failed', { user: username, ip: client.ip, reason: 'credentials_changed' })
    throw new InvalidCredentialsError()
  }
  events.emit('login_succeeded', { user: user.name, sub: user.id, sid, ip: client.ip })
  return { user, sid, refreshToken, refreshExpiresAt }
}
