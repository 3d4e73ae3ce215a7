/**
 * The SDK's errors: one base class with a stable `code` (the gateway's own code when the
 * gateway answered, see src/errors.ts) and the HTTP `status` (0 when no answer came).
 * Subclasses exist for what an app handles differently: wrong password, throttling, the
 * session being over, a missing scope, the network, and an upstream's own error answer.
 */

/**
 * The response header the gateway sets on every answer it makes itself (its value: the
 * answer's `code`) and strips from every upstream answer (plugins/errors.ts,
 * proxy/response-headers.ts). Only an answer that carries it may have a session
 * consequence — a refresh, a revocation check, SessionEndedError, InvalidCredentialsError:
 * an upstream's status, body and WWW-Authenticate pass through the gateway unchanged, and an
 * upstream saying 401 `token_expired` made the SDK refresh on every call
 * (fix-client-trusts-upstream-answers).
 */
export const GATEWAY_ERROR_HEADER = 'portcullis-error'

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
  /** an error answer the gateway relayed from an upstream (UpstreamError) */
  upstream: 'upstream_error',
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

/**
 * An error answer that is not the gateway's own (no `portcullis-error` header): the
 * upstream's, relayed as it was. `status`, `message` and `upstreamCode` (its body's `code`)
 * are the upstream's to interpret; `code` is always `upstream_error`, so an upstream can
 * never make an app see `session_ended` or `invalid_credentials`, and nothing about the
 * session changes.
 */
export class UpstreamError extends PortcullisError {
  /** the `code` of the upstream's JSON body, if it had one */
  readonly upstreamCode: string | undefined
  constructor (status: number, message: string, upstreamCode: string | undefined, options?: PortcullisErrorOptions) {
    super(ClientErrorCode.upstream, status, message, options)
    this.upstreamCode = upstreamCode
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
  /** the `portcullis-error` header: the gateway's code when the gateway answered; undefined for an upstream's answer */
  gatewayCode: string | undefined
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
    gatewayCode: res.headers.get(GATEWAY_ERROR_HEADER) ?? undefined,
    code: typeof body.code === 'string' ? body.code : undefined,
    message: typeof body.message === 'string' ? body.message : undefined,
    oauthError: typeof body.error === 'string' ? body.error : challenge.error,
    challenge,
    retryAfterSec: Number.isFinite(retryAfter) && retryAfter >= 0 ? retryAfter : undefined,
    requestId: res.headers.get('x-request-id') ?? undefined,
  }
}

/** the gateway said the access token expired: refresh (never on an upstream's say-so) */
export function saysTokenExpired (a: ErrorAnswer): boolean {
  return a.status === 401 && a.gatewayCode === ClientErrorCode.tokenExpired
}

/** the gateway said the access token was revoked: ask whether the session lives */
export function saysTokenRevoked (a: ErrorAnswer): boolean {
  return a.status === 401 && a.gatewayCode === ClientErrorCode.tokenRevoked
}

/**
 * The typed error for an answer. The gateway's own (its header present) by its code;
 * anything else is an UpstreamError, whatever its status, body or challenge say.
 */
export function errorFromAnswer (a: ErrorAnswer): PortcullisError {
  const options: PortcullisErrorOptions = { oauthError: a.oauthError, retryAfterSec: a.retryAfterSec, requestId: a.requestId }
  const code = a.gatewayCode
  if (code === undefined) return new UpstreamError(a.status, a.message ?? `the upstream answered ${a.status}`, a.code, options)
  const message = a.message ?? a.challenge.description ?? `the gateway answered ${a.status}`
  if (code === ClientErrorCode.invalidCredentials) return new InvalidCredentialsError(message, options)
  if (code === ClientErrorCode.tooManyAttempts) return new TooManyAttemptsError(message, options)
  if (code === ClientErrorCode.invalidGrant) return new SessionEndedError(SessionEndReason.invalidGrant, { ...options, status: a.status })
  if (code === ClientErrorCode.insufficientScope) return new InsufficientScopeError(message, a.challenge.scope, options)
  if (a.status === 401) return new UnauthorizedError(code, 401, message, options)
  return new PortcullisError(code, a.status, message, options)
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
