/**
 * The SDK's errors: one base class with a stable `code` (the gateway's own code when the
 * gateway answered, see src/errors.ts) and the HTTP `status` (0 when no answer came).
 * Subclasses exist for what an app handles differently: wrong password, throttling, the
 * session being over, a missing scope, the network.
 */

export const ClientErrorCode = {
  // from the gateway (src/errors.ts, src/sessions/errors.ts)
  invalidCredentials: 'invalid_credentials',
  tooManyAttempts: 'too_many_attempts',
  invalidGrant: 'invalid_grant',
  tokenExpired: 'token_expired',
  tokenRevoked: 'token_revoked',
  insufficientScope: 'insufficient_scope',
  // the SDK's own
  sessionEnded: 'session_ended',
  network: 'network_error',
  timeout: 'timeout',
  invalidResponse: 'invalid_response',
  transportMismatch: 'transport_mismatch',
  foreignOrigin: 'foreign_origin',
  unsupported: 'unsupported',
} as const
export type ClientErrorCode = typeof ClientErrorCode[keyof typeof ClientErrorCode]

/** why a session is over; `sessionEnded` events and SessionEndedError carry it */
export const SessionEndReason = {
  /** the gateway refused the refresh token: spent, revoked (logout-all, operator), expired, user disabled */
  invalidGrant: 'invalid_grant',
  /** there was no session to resume (no refresh cookie, empty store) */
  noSession: 'no_session',
  logout: 'logout',
  logoutAll: 'logout_all',
} as const
export type SessionEndReason = typeof SessionEndReason[keyof typeof SessionEndReason]

export interface PortcullisErrorOptions {
  cause?: unknown
  /** RFC 6750 `error` attribute (invalid_token, insufficient_scope, invalid_grant…) */
  oauthError?: string | undefined
  retryAfterSec?: number | undefined
  requestId?: string | undefined
}

export class PortcullisError extends Error {
  /** a ClientErrorCode, or any other stable code the gateway sent */
  readonly code: ClientErrorCode | (string & {})
  /** HTTP status of the gateway's answer; 0 when there was none (network, timeout, local) */
  readonly status: number
  readonly oauthError: string | undefined
  /** from Retry-After on 429 and 503 */
  readonly retryAfterSec: number | undefined
  /** the gateway's x-request-id, to quote to operators */
  readonly requestId: string | undefined

  constructor (code: string, status: number, message: string, options: PortcullisErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.status = status
    this.oauthError = options.oauthError
    this.retryAfterSec = options.retryAfterSec
    this.requestId = options.requestId
  }
}

export class InvalidCredentialsError extends PortcullisError {
  constructor (message = 'invalid username or password', options?: PortcullisErrorOptions) {
    super(ClientErrorCode.invalidCredentials, 401, message, options)
  }
}

/** login throttled; retry after `retryAfterSec` */
export class TooManyAttemptsError extends PortcullisError {
  constructor (message: string, options?: PortcullisErrorOptions) {
    super(ClientErrorCode.tooManyAttempts, 429, message, options)
  }
}

/** the session is over: the app should send the user to login */
export class SessionEndedError extends PortcullisError {
  readonly reason: SessionEndReason
  constructor (reason: SessionEndReason, options: PortcullisErrorOptions & { status?: number } = {}) {
    super(ClientErrorCode.sessionEnded, options.status ?? 0, `the session has ended (${reason})`, options)
    this.reason = reason
  }
}

/** a 401 from the gateway on an API call (expired, revoked, bad signature…): `code` says which */
export class UnauthorizedError extends PortcullisError {}

/** 403 insufficient_scope; `scope` lists what the route needs when the gateway says so */
export class InsufficientScopeError extends PortcullisError {
  readonly scope: string | undefined
  constructor (message: string, scope: string | undefined, options?: PortcullisErrorOptions) {
    super(ClientErrorCode.insufficientScope, 403, message, options)
    this.scope = scope
  }
}

/** no answer: connection refused or reset, DNS, offline, CORS refused (browsers cannot tell these apart) */
export class NetworkError extends PortcullisError {
  constructor (message: string, options?: PortcullisErrorOptions) {
    super(ClientErrorCode.network, 0, message, options)
  }
}

/** no answer within the SDK's timeout for auth requests */
export class TimeoutError extends PortcullisError {
  constructor (message: string, options?: PortcullisErrorOptions) {
    super(ClientErrorCode.timeout, 0, message, options)
  }
}

/** RFC 6750 §3 WWW-Authenticate: `Bearer realm="…", error="…", error_description="…", scope="…"` */
export interface BearerChallenge {
  error?: string
  description?: string
  scope?: string
}

export function parseBearerChallenge (header: string | null): BearerChallenge {
  const out: BearerChallenge = {}
  if (header === null) return out
  for (const m of header.matchAll(/([a-z_]+)="([^"]*)"/gi)) {
    const name = m[1]!.toLowerCase()
    if (name === 'error') out.error = m[2]!
    else if (name === 'error_description') out.description = m[2]!
    else if (name === 'scope') out.scope = m[2]!
  }
  return out
}

/** what an error answer says: the JSON body `{statusCode, code, message, error?}` and the headers */
export interface ErrorAnswer {
  status: number
  code: string | undefined
  message: string | undefined
  oauthError: string | undefined
  challenge: BearerChallenge
  retryAfterSec: number | undefined
  requestId: string | undefined
}

/**
 * Reads an error answer without consuming `res` (a clone is read). Only JSON bodies are
 * parsed: an upstream's HTML error page is not the gateway's contract. WWW-Authenticate
 * is read when visible (cross-origin, only if the gateway exposes it; the body says the
 * same thing, so nothing depends on it).
 */
export async function readErrorAnswer (res: Response): Promise<ErrorAnswer> {
  let body: { code?: unknown, message?: unknown, error?: unknown } = {}
  if (/\bjson\b/i.test(res.headers.get('content-type') ?? '')) {
    try {
      const parsed: unknown = await res.clone().json()
      if (parsed !== null && typeof parsed === 'object') body = parsed
    } catch {
      // not JSON after all: fall back to status and headers
    }
  }
  const retryAfter = Number(res.headers.get('retry-after') ?? Number.NaN)
  const challenge = parseBearerChallenge(res.headers.get('www-authenticate'))
  return {
    status: res.status,
    code: typeof body.code === 'string' ? body.code : undefined,
    message: typeof body.message === 'string' ? body.message : undefined,
    oauthError: typeof body.error === 'string' ? body.error : challenge.error,
    challenge,
    retryAfterSec: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
    requestId: res.headers.get('x-request-id') ?? undefined,
  }
}

/** an expired access token: the code, or else the RFC 6750 challenge's description */
export function saysTokenExpired (a: ErrorAnswer): boolean {
  if (a.status !== 401) return false
  if (a.code !== undefined) return a.code === ClientErrorCode.tokenExpired
  return a.challenge.error === 'invalid_token' && /expired/i.test(a.challenge.description ?? '')
}

export function saysTokenRevoked (a: ErrorAnswer): boolean {
  return a.status === 401 && a.code === ClientErrorCode.tokenRevoked
}

/** the typed error for an answer; `http_<status>` when the body names no code */
export function errorFromAnswer (a: ErrorAnswer): PortcullisError {
  const message = a.message ?? a.challenge.description ?? `the gateway answered ${a.status}`
  const options: PortcullisErrorOptions = { oauthError: a.oauthError, retryAfterSec: a.retryAfterSec, requestId: a.requestId }
  if (a.code === ClientErrorCode.invalidCredentials) return new InvalidCredentialsError(message, options)
  if (a.status === 429 && (a.code === undefined || a.code === ClientErrorCode.tooManyAttempts)) return new TooManyAttemptsError(message, options)
  if (a.code === ClientErrorCode.invalidGrant || a.oauthError === 'invalid_grant') {
    return new SessionEndedError(SessionEndReason.invalidGrant, { ...options, status: a.status })
  }
  if (a.status === 403 && (a.code === ClientErrorCode.insufficientScope || a.oauthError === 'insufficient_scope')) {
    return new InsufficientScopeError(message, a.challenge.scope, options)
  }
  if (a.status === 401) {
    const code = a.code ?? (saysTokenExpired(a) ? ClientErrorCode.tokenExpired : a.oauthError ?? 'unauthorized')
    return new UnauthorizedError(code, 401, message, options)
  }
  return new PortcullisError(a.code ?? `http_${a.status}`, a.status, message, options)
}

/** The typed error for a non-2xx Response (the Response itself is left unread). */
export async function errorFromResponse (res: Response): Promise<PortcullisError> {
  return errorFromAnswer(await readErrorAnswer(res))
}

/** fetch rejected: the caller's own abort passes through untouched, the rest is a NetworkError */
export function networkError (err: unknown, what: string): unknown {
  if (isAbort(err)) return err
  return new NetworkError(`${what} failed: no answer from the gateway`, { cause: err })
}

export function isAbort (err: unknown): boolean {
  return (err as { name?: unknown } | null)?.name === 'AbortError'
}
