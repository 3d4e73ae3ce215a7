/**
 * The token lifecycle (DESIGN.md "The token lifecycle"): login, refresh rotation with
 * reuse detection, logout, revocation. Fastify-free: the HTTP layer maps the thrown
 * errors (errors.ts) to responses by their `statusCode` and `code`.
 *
 * Time comes only from the injected `clock` (epoch ms), so tests move it instead of
 * sleeping, and every database timestamp agrees with it.
 */
import { InvalidCredentialsError, InvalidGrantError, LoginThrottledError, SessionNotFoundError, UserNotFoundError } from './errors.js'
import { checkPasswordLength, hashPassword, needsRehash, verifyPassword } from './passwords.js'
import {
  hashRefreshToken, isWellFormedRefreshToken, newRefreshToken, newSessionId, openSuccessor, sealSuccessor,
} from './refresh-tokens.js'
import { revokeJtiTx, revokeSessionTx, revokeUserTx, RevokeReason } from './revoke.js'
import type { RevocationTiming } from './revoke.js'
import type { SessionRecord, Store, UserRecord } from './store.js'
import type { LoginThrottle } from './throttle.js'

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

export interface SessionServiceOptions {
  /** lifetime of one refresh token; capped by the session's absolute expiry */
  refreshTokenTtlSec: number
  /** absolute session lifetime from login: refresh never extends it */
  sessionMaxAgeSec: number
  /** how long a spent refresh token still returns its successor (concurrent tabs) */
  reuseGraceSec: number
  /** access token lifetime, used to size revocation entries */
  accessTokenTtlSec: number
  /** the verifier's clock tolerance: revocation entries outlive `exp` by this much */
  clockSkewSec: number
}

export const DEFAULT_SESSION_OPTIONS: Readonly<SessionServiceOptions> = Object.freeze({
  refreshTokenTtlSec: 14 * 24 * 3600,
  sessionMaxAgeSec: 30 * 24 * 3600,
  reuseGraceSec: 10,
  accessTokenTtlSec: 600,
  clockSkewSec: 30,
})

/** where a request came from; stored with the session for `sessions list` */
export interface ClientInfo {
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
  /** optional login throttle; checked before any password work */
  throttle?: LoginThrottle | undefined
}

const MAX_USER_AGENT_CHARS = 512
const MAX_IP_CHARS = 64

function clip (v: string | undefined, max: number): string | null {
  return v === undefined || v === '' ? null : v.slice(0, max)
}

type RefreshOutcome =
  | { kind: 'rotated', user: UserRecord, session: SessionRecord, refreshToken: string, refreshExpiresAt: Date }
  | { kind: 'invalid', reason: string }

export class SessionService {
  readonly #store: Store
  readonly #clock: () => number
  readonly #sign: SignAccessToken
  readonly #throttle: LoginThrottle | undefined
  readonly options: Readonly<SessionServiceOptions>

  constructor (deps: SessionServiceDeps) {
    this.#store = deps.store
    this.#clock = deps.clock ?? Date.now
    this.#sign = deps.signAccessToken
    this.#throttle = deps.throttle
    this.options = Object.freeze({ ...DEFAULT_SESSION_OPTIONS, ...deps.options })
    for (const [k, v] of Object.entries(this.options)) {
      if (!Number.isFinite(v) || v < 0) throw new TypeError(`sessions option ${k} must be a number >= 0`)
    }
  }

  get #timing (): RevocationTiming {
    return { accessTokenTtlSec: this.options.accessTokenTtlSec, clockSkewSec: this.options.clockSkewSec }
  }

  /**
   * Throws PasswordLengthError (before any work), LoginThrottledError (429, before
   * verifying), InvalidCredentialsError (unknown user, wrong password, disabled user:
   * one error, and the unknown user is verified against the dummy hash for equal
   * cost) or StoreUnavailableError.
   */
  async login (username: string, password: string, client: ClientInfo = {}): Promise<TokenPair> {
    checkPasswordLength(password)
    if (this.#throttle !== undefined) {
      const decision = this.#throttle.check(username, client.ip)
      if (!decision.allowed) throw new LoginThrottledError(decision.retryAfterSec)
    }
    const user = await this.#store.findUserByName(username)
    const ok = await verifyPassword(user?.passwordHash, password)
    if (user === undefined || !ok || user.disabled) {
      this.#throttle?.recordFailure(username, client.ip)
      throw new InvalidCredentialsError()
    }
    this.#throttle?.recordSuccess(username)
    if (needsRehash(user.passwordHash)) {
      // upgrade hashes made with older parameters while we hold the plaintext
      await this.#store.updateUser(user.name, { passwordHash: await hashPassword(password) }, new Date(this.#clock()))
    }

    const nowMs = this.#clock()
    const sid = newSessionId()
    const sessionExpiresAt = new Date(nowMs + this.options.sessionMaxAgeSec * 1000)
    const refreshToken = newRefreshToken()
    const refreshExpiresAt = this.#refreshExpiry(nowMs, sessionExpiresAt)
    await this.#store.transaction(async (tx) => {
      await tx.insertSession({
        id: sid,
        userId: user.id,
        createdAt: new Date(nowMs),
        expiresAt: sessionExpiresAt,
        userAgent: clip(client.userAgent, MAX_USER_AGENT_CHARS),
        ip: clip(client.ip, MAX_IP_CHARS),
      })
      await tx.insertRefreshToken({ tokenHash: hashRefreshToken(refreshToken), sessionId: sid, createdAt: new Date(nowMs), expiresAt: refreshExpiresAt })
    })
    return await this.#pair(user, sid, refreshToken, refreshExpiresAt)
  }

  /**
   * Rotates a refresh token: in one transaction the presented token is locked, spent
   * and replaced. Throws InvalidGrantError (`reason` says why, for the log) or
   * StoreUnavailableError. See the grace-window and reuse rules inline.
   */
  async refresh (refreshToken: string, client: ClientInfo = {}): Promise<TokenPair> {
    if (!isWellFormedRefreshToken(refreshToken)) throw new InvalidGrantError('malformed')
    const presentedHash = hashRefreshToken(refreshToken)
    const nowMs = this.#clock()
    const now = new Date(nowMs)
    const outcome = await this.#store.transaction(async (tx): Promise<RefreshOutcome> => {
      // FOR UPDATE: concurrent refreshes of one token queue here; the second one then
      // sees it spent and takes the grace path, so exactly one successor exists.
      const ctx = await tx.lockRefreshToken(presentedHash)
      if (ctx === undefined) return { kind: 'invalid', reason: 'unknown_token' }
      const { token, session, user } = ctx
      if (session.revokedAt !== null) return { kind: 'invalid', reason: 'session_revoked' }
      if (session.expiresAt.getTime() <= nowMs) return { kind: 'invalid', reason: 'session_expired' }
      if (user.disabled) return { kind: 'invalid', reason: 'user_disabled' }

      if (token.spentAt !== null) {
        const spentForMs = nowMs - token.spentAt.getTime()
        if (spentForMs <= this.options.reuseGraceSec * 1000 && token.successorHash !== null && token.successorSealed !== null) {
          // A second tab racing the first: give back the same successor, if it is
          // still unused. Only the holder of the presented plaintext can open it.
          const successor = await tx.getRefreshToken(token.successorHash)
          const plaintext = openSuccessor(refreshToken, token.successorSealed)
          if (successor !== undefined && plaintext !== undefined && successor.spentAt === null && successor.expiresAt.getTime() > nowMs) {
            await tx.touchSession(session.id, now, clip(client.ip, MAX_IP_CHARS), clip(client.userAgent, MAX_USER_AGENT_CHARS))
            return { kind: 'rotated', user, session, refreshToken: plaintext, refreshExpiresAt: successor.expiresAt }
          }
          // the successor moved on already: refuse, but within the grace window this is
          // a race between the client's own tabs, not evidence of theft
          return { kind: 'invalid', reason: 'successor_already_used' }
        }
        // Reuse after the grace window: the token was copied. Revoke the whole family,
        // since we cannot tell the thief's copy from the client's (OAuth 2.0 Security
        // BCP, RFC 9700 §4.14.2). Committed before the error is thrown.
        await revokeSessionTx(tx, session.id, nowMs, RevokeReason.refreshTokenReuse, this.#timing)
        return { kind: 'invalid', reason: 'reuse_detected' }
      }
      if (token.expiresAt.getTime() <= nowMs) return { kind: 'invalid', reason: 'token_expired' }

      const next = newRefreshToken()
      const nextExpiresAt = this.#refreshExpiry(nowMs, session.expiresAt)
      await tx.insertRefreshToken({ tokenHash: hashRefreshToken(next), sessionId: session.id, createdAt: now, expiresAt: nextExpiresAt })
      await tx.spendRefreshToken(presentedHash, now, hashRefreshToken(next), sealSuccessor(refreshToken, next))
      await tx.touchSession(session.id, now, clip(client.ip, MAX_IP_CHARS), clip(client.userAgent, MAX_USER_AGENT_CHARS))
      return { kind: 'rotated', user, session, refreshToken: next, refreshExpiresAt: nextExpiresAt }
    })
    if (outcome.kind === 'invalid') throw new InvalidGrantError(outcome.reason)
    // the user row was read in the transaction: the token carries CURRENT scopes/claims
    return await this.#pair(outcome.user, outcome.session.id, outcome.refreshToken, outcome.refreshExpiresAt)
  }

  /**
   * Ends a session. Either argument may be missing; unknown or repeated logouts are
   * not errors (RFC 7009 §2.2 answers 200 for invalid tokens too). `accessClaims` must
   * be the claims of an access token that has already been verified.
   */
  async logout (refreshToken: string | undefined, accessClaims: AccessClaims | undefined): Promise<void> {
    const nowMs = this.#clock()
    await this.#store.transaction(async (tx) => {
      const sids = new Set<string>()
      if (refreshToken !== undefined && isWellFormedRefreshToken(refreshToken)) {
        // a spent token still names its session: logging out with it ends the session
        const row = await tx.getRefreshToken(hashRefreshToken(refreshToken))
        if (row !== undefined) sids.add(row.sessionId)
      }
      if (typeof accessClaims?.sid === 'string') sids.add(accessClaims.sid)
      for (const sid of sids) await revokeSessionTx(tx, sid, nowMs, RevokeReason.logout, this.#timing)
      if (typeof accessClaims?.jti === 'string' && typeof accessClaims.exp === 'number') {
        await revokeJtiTx(tx, accessClaims.jti, accessClaims.exp, nowMs, this.#timing)
      }
    })
  }

  /** "log out everywhere": every session of `sub` and every access token issued up to now */
  async logoutAll (sub: string): Promise<void> {
    const nowMs = this.#clock()
    await this.#store.transaction(async (tx) => await revokeUserTx(tx, sub, nowMs, RevokeReason.logoutAll, this.#timing))
  }

  /** operator-forced logout of a user by `sub` (user id); returns the sessions revoked */
  async revokeUser (sub: string): Promise<string[]> {
    const nowMs = this.#clock()
    return await this.#store.transaction(async (tx) => await revokeUserTx(tx, sub, nowMs, RevokeReason.admin, this.#timing))
  }

  /** revokes one session; throws SessionNotFoundError for an unknown id, no error when already revoked */
  async revokeSession (sid: string): Promise<void> {
    const nowMs = this.#clock()
    await this.#store.transaction(async (tx) => {
      if (await tx.getSession(sid) === undefined) throw new SessionNotFoundError(sid)
      await revokeSessionTx(tx, sid, nowMs, RevokeReason.admin, this.#timing)
    })
  }

  /** denylists one access token until `expSec` (+ clock skew) */
  async revokeJti (jti: string, expSec: number): Promise<void> {
    const nowMs = this.#clock()
    await this.#store.transaction(async (tx) => { await revokeJtiTx(tx, jti, expSec, nowMs, this.#timing) })
  }

  /** the sessions of a user, newest first; throws UserNotFoundError */
  async listSessions (username: string): Promise<SessionInfo[]> {
    const user = await this.#store.findUserByName(username)
    if (user === undefined) throw new UserNotFoundError(username)
    return toSessionInfos(await this.#store.listSessionsByUser(user.id), this.#clock())
  }

  #refreshExpiry (nowMs: number, sessionExpiresAt: Date): Date {
    return new Date(Math.min(nowMs + this.options.refreshTokenTtlSec * 1000, sessionExpiresAt.getTime()))
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
      expiresIn: Math.max(0, signed.exp - Math.floor(this.#clock() / 1000)),
      refreshToken,
      refreshExpiresAt,
      sid,
      sub: user.id,
      jti: signed.jti,
    }
  }
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
