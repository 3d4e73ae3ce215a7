/**
 * Every error the sessions module throws. Each has a stable `code` (what tests and
 * clients match on) and a `statusCode` the HTTP layer can answer with; the message is
 * safe to show to a client only when statusCode < 500. Library errors are kept as
 * `cause`. Private detail for logs (never a token or password) goes in `reason`.
 */

export class SessionsError extends Error {
  readonly code: string
  readonly statusCode: number
  constructor (code: string, statusCode: number, message: string, options?: { cause?: unknown }) {
    super(message, options)
    this.name = new.target.name
    this.code = code
    this.statusCode = statusCode
  }
}

/** The database cannot be reached: the HTTP layer answers 503 and may retry later. */
export class StoreUnavailableError extends SessionsError {
  constructor (options?: { cause?: unknown }) {
    super('store_unavailable', 503, 'the session store is unavailable', options)
  }
}

/**
 * Login failed. One error for unknown user, wrong password and disabled user, so a
 * client cannot enumerate accounts (OWASP Authentication Cheat Sheet, "Authentication
 * and Error Messages").
 */
export class InvalidCredentialsError extends SessionsError {
  constructor () {
    super('invalid_credentials', 401, 'invalid username or password')
  }
}

/**
 * A refresh token cannot be used: unknown, expired, spent, revoked, session too old or
 * user disabled. RFC 6749 §5.2 `invalid_grant`; `reason` is for the log only.
 */
export class InvalidGrantError extends SessionsError {
  readonly reason: string
  constructor (reason: string) {
    super('invalid_grant', 400, 'the refresh token is invalid, expired or revoked')
    this.reason = reason
  }
}

/** Password outside 1..MAX_PASSWORD_BYTES: refused before any hashing (hashing 1 MB would be a DoS). */
export class PasswordLengthError extends SessionsError {
  readonly maxBytes: number
  constructor (maxBytes: number, tooLong: boolean) {
    super(tooLong ? 'password_too_long' : 'password_empty', tooLong ? 413 : 400,
      tooLong ? `the password is longer than ${maxBytes} bytes` : 'the password is empty')
    this.maxBytes = maxBytes
  }
}

/** Too many failed logins for this account or client address. */
export class LoginThrottledError extends SessionsError {
  readonly retryAfterSec: number
  constructor (retryAfterSec: number) {
    super('too_many_attempts', 429, 'too many failed login attempts; retry later')
    this.retryAfterSec = retryAfterSec
  }
}

export class UserExistsError extends SessionsError {
  constructor (name: string, options?: { cause?: unknown }) {
    super('user_exists', 409, `user ${JSON.stringify(name)} already exists`, options)
  }
}

export class UserNotFoundError extends SessionsError {
  constructor (name: string) {
    super('user_not_found', 404, `no user ${JSON.stringify(name)}`)
  }
}

export class SessionNotFoundError extends SessionsError {
  constructor (sid: string) {
    super('session_not_found', 404, `no session ${JSON.stringify(sid)}`)
  }
}

/** Bad input to a user-management call (name, scopes, claims). `path` names the field. */
export class InvalidUserInputError extends SessionsError {
  readonly path: string
  constructor (path: string, message: string) {
    super('invalid_user_input', 400, `${path}: ${message}`)
    this.path = path
  }
}

/** The CLI could not read a password (no terminal, empty input, interrupted). */
export class PasswordInputError extends SessionsError {
  constructor (message: string) {
    super('password_input', 400, message)
  }
}
