/**
 * The sessions module's errors: subclasses of the one GatewayError (src/errors.ts) where a
 * caller needs more than the code — the throttle's Retry-After, the private reason of an
 * invalid grant (for the log and the security event, never for the client), the field of
 * bad user input. Each code is in the one registry (ErrorCode).
 */
import { ErrorCode, GatewayError, OAuthError } from '../errors.js'

/** how long a client is asked to wait when the store is away */
export const STORE_RETRY_AFTER_SEC = 5

/** The database cannot be reached: the HTTP layer answers 503 and the client may retry later. */
export class StoreUnavailableError extends GatewayError {
  constructor (options?: { cause?: unknown }) {
    super(ErrorCode.storeUnavailable, 503, 'the session store is unavailable; retry shortly', { cause: options?.cause, retryAfterSec: STORE_RETRY_AFTER_SEC })
  }
}

/**
 * A COMMIT was sent and its answer never came — the connection broke or the read timed out —
 * so the transaction may have committed or not. Still a 503 for the client; but a caller that
 * can tell from the data whether its work landed (login and refresh: is the new refresh token
 * on the session row? commit-outcome.ts) answers from that instead of asking the client to
 * retry work that was done (fix-commit-answer-lost).
 */
export class CommitOutcomeUnknownError extends StoreUnavailableError {}

/**
 * Login failed. One error for unknown user, wrong password and disabled user, so a
 * client cannot enumerate accounts (OWASP Authentication Cheat Sheet, "Authentication
 * and Error Messages").
 */
export class InvalidCredentialsError extends GatewayError {
  constructor () {
    super(ErrorCode.invalidCredentials, 401, 'invalid username or password')
  }
}

/**
 * A refresh token cannot be used: unknown, expired, spent, revoked, session too old or
 * user disabled. RFC 6749 §5.2 `invalid_grant`; `reason` is for the log only.
 */
export class InvalidGrantError extends GatewayError {
  readonly reason: string
  constructor (reason: string) {
    super(ErrorCode.invalidGrant, 400, 'the refresh token is invalid, expired or revoked', { oauthError: OAuthError.invalidGrant })
    this.reason = reason
  }
}

/** Password outside 1..MAX_PASSWORD_BYTES: refused before any hashing (hashing 1 MB would be a DoS). */
export class PasswordLengthError extends GatewayError {
  readonly maxBytes: number
  constructor (maxBytes: number, tooLong: boolean) {
    super(tooLong ? ErrorCode.passwordTooLong : ErrorCode.passwordEmpty, tooLong ? 413 : 400,
      tooLong ? `the password is longer than ${maxBytes} bytes` : 'the password is empty')
    this.maxBytes = maxBytes
  }
}

/** Too many login attempts for this account or client address. */
export class LoginThrottledError extends GatewayError {
  /** which limit was hit: for the security event, not for the client */
  readonly limit: 'account' | 'ip' | 'ip_total' | undefined
  constructor (retryAfterSec: number, limit?: 'account' | 'ip' | 'ip_total') {
    super(ErrorCode.tooManyAttempts, 429, 'too many login attempts; retry later', { retryAfterSec })
    this.limit = limit
  }
}

/** Too many logouts revoking one identity provider's tokens (foreign-revocations.ts). */
export class RevocationThrottledError extends GatewayError {
  constructor (retryAfterSec: number) {
    super(ErrorCode.tooManyAttempts, 429, 'too many logouts of this identity provider\'s tokens; retry later', { retryAfterSec })
  }
}

export class UserExistsError extends GatewayError {
  constructor (name: string, options?: { cause?: unknown, differsInCase?: boolean }) {
    super(ErrorCode.userExists, 409, options?.differsInCase === true
      ? `a user whose name differs from ${JSON.stringify(name)} only in letter case or Unicode form already exists`
      : `user ${JSON.stringify(name)} already exists`, options)
  }
}

export class UserNotFoundError extends GatewayError {
  constructor (name: string) {
    super(ErrorCode.userNotFound, 404, `no user ${JSON.stringify(name)}`)
  }
}

export class SessionNotFoundError extends GatewayError {
  constructor (sid: string) {
    super(ErrorCode.sessionNotFound, 404, `no session ${JSON.stringify(sid)}`)
  }
}

/** Bad input to a user-management call (name, scopes, claims). `path` names the field. */
export class InvalidUserInputError extends GatewayError {
  readonly path: string
  constructor (path: string, message: string) {
    super(ErrorCode.invalidUserInput, 400, `${path}: ${message}`)
    this.path = path
  }
}

/** The CLI could not read a password (no terminal, empty input, interrupted). */
export class PasswordInputError extends GatewayError {
  constructor (message: string) {
    super(ErrorCode.passwordInput, 400, message)
  }
}
