/**
 * The token lifecycle (DESIGN.md "The token lifecycle"): login (login.ts), refresh
 * rotation with reuse detection (rotation.ts), logout, revocation. Fastify-free: the HTTP
 * layer maps the thrown errors (errors.ts) to responses by their `statusCode` and `code`.
 *
 * Time comes only from the injected `clock` (epoch ms), so tests move it instead of
 * sleeping, and every database timestamp agrees with it. Security events (login, reuse,
 * revocations) are emitted after their transaction commits, never for one rolled back.
 */
import { NO_SECURITY_EVENTS } from '../security-events.js'
import type { SecurityEvents } from '../security-events.js'
import { InvalidGrantError, RevocationThrottledError, SessionNotFoundError, UserNotFoundError } from './errors.js'
import { countForeignRevocation } from './foreign-revocations.js'
import { loginFlow } from './login.js'
import { hasFamilyTag, hashRefreshToken, parseRefreshToken } from './refresh-tokens.js'
import { eventReason, REVOCATION_TIMING, revokeJtiTx, revokeSessionTx, revokeUserTx, RevokeReason } from './revoke.js'
import type { RevokeReasonName } from './revoke.js'
import { refreshFlow } from './rotation.js'
import type { ServiceContext, SessionServiceOptions } from './service-context.js'
import type { PurgeResult, SessionRecord, Store, StoreQueries, UserRecord } from './store.js'
import type { LoginThrottle } from './throttle.js'

export type { SessionServiceOptions } from './service-context.js'

export interface SignAccessTokenInput {
  sub: string
  scope: string[]
  sid: string
  claims: Record<string, unknown>
}

export interface SignedAccessToken {
  token: string
  jti: string
  /** epoch seconds */
  iat: number
  /** epoch seconds */
  exp: number
}

/** provided by the token module (src/tokens); may be sync or async */
export type SignAccessToken = (input: SignAccessTokenInput) => SignedAccessToken | Promise<SignedAccessToken>

export const DEFAULT_SESSION_OPTIONS: Readonly<SessionServiceOptions> = Object.freeze({
  refreshTokenTtlSec: 14 * 24 * 3600,
  sessionMaxAgeSec: 30 * 24 * 3600,
  reuseGraceSec: 10,
  accessTokenTtlSec: 600,
  clockSkewSec: 30,
})

/** where a request came from: the throttle's address and what `sessions list` shows */
export interface ClientInfo {
  /** the client address as the HTTP layer resolved it (Fastify `request.ip`, per server.trustProxy) */
  ip?: string | undefined
  userAgent?: string | undefined
}

export interface TokenPair {
  accessToken: string
  tokenType: 'Bearer'
  /** seconds until the access token expires */
  expiresIn: number
  refreshToken: string
  refreshExpiresAt: Date
  sid: string
  sub: string
  jti: string
}

/** the verified claims of the access token presented at logout */
export interface AccessClaims {
  jti?: unknown
  exp?: unknown
  sid?: unknown
  sub?: unknown
}

/** a session as shown to operators: the stored record, keyed by `sid`, plus whether it is live */
export interface SessionInfo extends Omit<SessionRecord, 'id' | 'userId'> {
  sid: string
  /** not revoked and not past its absolute expiry */
  active: boolean
}

export interface SessionServiceDeps {
  store: Store
  clock?: () => number
  signAccessToken: SignAccessToken
  options?: Partial<SessionServiceOptions>
  /** the login throttle (throttle.ts, in the store); without one logins are not throttled */
  throttle?: LoginThrottle | undefined
  /** security event lines and counters; default: none */
  events?: SecurityEvents | undefined
}

export class SessionService {
  readonly #ctx: ServiceContext
  readonly #sign: SignAccessToken
  readonly options: Readonly<SessionServiceOptions>

  constructor (deps: SessionServiceDeps) {
    this.options = Object.freeze({ ...DEFAULT_SESSION_OPTIONS, ...deps.options })
    for (const [k, v] of Object.entries(this.options)) {
      if (!Number.isFinite(v) || v < 0) throw new TypeError(`sessions option ${k} must be a number >= 0`)
    }
    const options = this.options
    this.#sign = deps.signAccessToken
    this.#ctx = {
      store: deps.store,
      clock: deps.clock ?? Date.now,
      options,
      timing: REVOCATION_TIMING,
      throttle: deps.throttle,
      events: deps.events ?? NO_SECURITY_EVENTS,
      refreshExpiry: (nowMs, sessionExpiresAt) => new Date(Math.min(nowMs + options.refreshTokenTtlSec * 1000, sessionExpiresAt.getTime())),
    }
  }

  get #store (): Store { return this.#ctx.store }
  #now (): number { return this.#ctx.clock() }

  /**
   * Throws PasswordLengthError (before any work), LoginThrottledError (429, counted before
   * verifying), InvalidCredentialsError (unknown user, wrong password, disabled user, or a
   * revocation of the user's sessions that committed while this login ran: one error, and
   * the unknown user is verified against the dummy hash for equal cost) or
   * StoreUnavailableError.
   */
  async login (username: string, password: string, client: ClientInfo = {}): Promise<TokenPair> {
    const r = await loginFlow(this.#ctx, username, password, client)
    return await this.#pair(r.user, r.sid, r.refreshToken, r.refreshExpiresAt)
  }

  /**
   * Rotates a refresh token (rotation.ts). Throws InvalidGrantError (`reason` says why,
   * for the log) or StoreUnavailableError.
   */
  async refresh (refreshToken: string, client: ClientInfo = {}): Promise<TokenPair> {
    const parsed = parseRefreshToken(refreshToken)
    if (parsed === undefined) throw new InvalidGrantError('malformed')
    const outcome = await refreshFlow(this.#ctx, parsed, client)
    if (outcome.kind === 'invalid') throw new InvalidGrantError(outcome.reason)
    // the user row was read in the transaction: the token carries CURRENT scopes/claims
    return await this.#pair(outcome.user, outcome.session.id, outcome.refreshToken, outcome.refreshExpiresAt)
  }

  /**
   * Ends a session. Either argument may be missing; unknown or repeated logouts are
   * not errors (RFC 7009 §2.2 answers 200 for invalid tokens too). `accessClaims` must
   * be the claims of an access token that has already been verified; `foreignIssuer` names
   * the identity provider that issued it when it is not the gateway's own — such a logout
   * counts against a quota (foreign-revocations.ts) and throws RevocationThrottledError beyond it.
   */
  async logout (refreshToken: string | undefined, accessClaims: AccessClaims | undefined, foreignIssuer?: string): Promise<void> {
    const nowMs = this.#now()
    const sub = typeof accessClaims?.sub === 'string' ? accessClaims.sub : undefined
    const done = await this.#store.transaction(async (tx) => {
      // an identity provider's token is counted first: beyond its quota nothing is done
      if (foreignIssuer !== undefined && typeof accessClaims?.jti === 'string') {
        const waitSec = await countForeignRevocation(tx, foreignIssuer, sub, nowMs)
        if (waitSec !== undefined) return { throttled: waitSec, revoked: [], jti: undefined }
      }
      const sids = new Set<string>()
      const fromToken = refreshToken === undefined ? undefined : await sessionOfRefreshToken(tx, refreshToken)
      if (fromToken !== undefined) sids.add(fromToken)
      if (typeof accessClaims?.sid === 'string') sids.add(accessClaims.sid)
      const revoked: string[] = []
      // in id order, as revokeUserSessions locks a user's sessions: two logouts naming the same
      // two sessions the other way round, or a logout beside a logout-all, deadlocked (a 500)
      for (const sid of [...sids].sort()) if (await revokeSessionTx(tx, sid, nowMs, RevokeReason.logout, this.#ctx.timing)) revoked.push(sid)
      let jti: string | undefined
      if (typeof accessClaims?.jti === 'string' && typeof accessClaims.exp === 'number' &&
        await revokeJtiTx(tx, accessClaims.jti, accessClaims.exp, nowMs, this.#ctx.timing)) jti = accessClaims.jti
      return { throttled: undefined, revoked, jti }
    })
    if (done.throttled !== undefined) {
      this.#ctx.events.emit('revocation_throttled', { issuer: foreignIssuer ?? '', sub, retryAfterSec: done.throttled })
      throw new RevocationThrottledError(done.throttled)
    }
    for (const sid of done.revoked) this.#ctx.events.emit('session_revoked', { sid, sub, reason: 'logout' })
    if (done.jti !== undefined) this.#ctx.events.emit('jti_revoked', { jti: done.jti, sub, reason: 'logout' })
  }

  /** "log out everywhere": every session of `sub` and every access token issued up to now */
  /** "log out everywhere"; returns the cut-off (epoch second, inclusive) of the user's access tokens */
  async logoutAll (sub: string): Promise<number> {
    const nowMs = this.#now()
    await this.#revokeUser(sub, RevokeReason.logoutAll, nowMs)
    return Math.floor(nowMs / 1000)
  }

  /** operator-forced logout of a user by `sub` (user id); returns the sessions revoked */
  async revokeUser (sub: string): Promise<string[]> {
    return await this.#revokeUser(sub, RevokeReason.admin)
  }

  async #revokeUser (sub: string, reason: RevokeReasonName, nowMs = this.#now()): Promise<string[]> {
    const sids = await this.#store.transaction(async (tx) => await revokeUserTx(tx, sub, nowMs, reason, this.#ctx.timing))
    this.#ctx.events.emit('user_revoked', { sub, reason: eventReason(reason), sessions: sids.length })
    return sids
  }

  /** revokes one session; throws SessionNotFoundError for an unknown id, no error when already revoked */
  async revokeSession (sid: string): Promise<void> {
    const nowMs = this.#now()
    const revoked = await this.#store.transaction(async (tx) => {
      const session = await tx.getSession(sid)
      if (session === undefined) throw new SessionNotFoundError(sid)
      return await revokeSessionTx(tx, sid, nowMs, RevokeReason.admin, this.#ctx.timing) ? session.userId : undefined
    })
    if (revoked !== undefined) this.#ctx.events.emit('session_revoked', { sid, sub: revoked, reason: 'admin' })
  }

  /** denylists one access token until `expSec` (+ the largest clock skew); false when `expSec` is past (nothing written: no token it names can pass) */
  async revokeJti (jti: string, expSec: number): Promise<boolean> {
    const nowMs = this.#now()
    const written = await this.#store.transaction(async (tx) => await revokeJtiTx(tx, jti, expSec, nowMs, this.#ctx.timing))
    if (written) this.#ctx.events.emit('jti_revoked', { jti, reason: 'admin' })
    return written
  }

  /** the sessions of a user, newest first; throws UserNotFoundError */
  async listSessions (username: string): Promise<SessionInfo[]> {
    const user = await this.#store.findUserByName(username)
    if (user === undefined) throw new UserNotFoundError(username)
    return toSessionInfos(await this.#store.listSessionsByUser(user.id), this.#now())
  }

  /**
   * Deletes what can no longer matter (store.purgeExpired) with this service's grace
   * window. Idempotent; safe from every replica.
   */
  async purgeExpired (): Promise<PurgeResult> {
    return await this.#store.purgeExpired(new Date(this.#now()), { reuseGraceSec: this.options.reuseGraceSec })
  }

  async #pair (user: UserRecord, sid: string, refreshToken: string, refreshExpiresAt: Date): Promise<TokenPair> {
    const signed = await this.#sign({
      sub: user.id,
      scope: user.scopes,
      sid,
      claims: { ...user.claims, preferred_username: user.name },
    })
    return {
      accessToken: signed.token,
      tokenType: 'Bearer',
      expiresIn: Math.max(0, signed.exp - Math.floor(this.#now() / 1000)),
      refreshToken,
      refreshExpiresAt,
      sid,
      sub: user.id,
      jti: signed.jti,
    }
  }
}

/**
 * The session a refresh token names, if it really is one of that session's tokens (a
 * spent one too: logging out with it ends the session). Only naming a sid is not enough:
 * sids appear in access tokens and logs, and must not let anyone end someone's session.
 */
async function sessionOfRefreshToken (tx: StoreQueries, token: string): Promise<string | undefined> {
  const parsed = parseRefreshToken(token)
  if (parsed === undefined) return undefined
  const hash = hashRefreshToken(token)
  if (parsed.format === 'legacy') return (await tx.getRefreshToken(hash))?.sessionId
  const r = await tx.getSessionRefresh(parsed.sid)
  if (r === undefined) return undefined
  return r.hash === hash || r.prevHash === hash || (r.key !== null && hasFamilyTag(parsed, r.key)) ? parsed.sid : undefined
}

export function toSessionInfos (sessions: SessionRecord[], nowMs: number): SessionInfo[] {
  return sessions.map((s) => ({
    sid: s.id,
    createdAt: s.createdAt,
    lastUsedAt: s.lastUsedAt,
    expiresAt: s.expiresAt,
    userAgent: s.userAgent,
    ip: s.ip,
    revokedAt: s.revokedAt,
    revokeReason: s.revokeReason,
    active: s.revokedAt === null && s.expiresAt.getTime() > nowMs,
  }))
}
