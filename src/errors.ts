/**
 * The one error hierarchy (fastify's lib/errors.js and jose's util/errors.ts are the
 * models). Every error the gateway raises is a GatewayError with a stable `code` from
 * the registry below (tests and clients match on it), an HTTP `statusCode`, and a message
 * that is safe to send when the status is below 500. Detail for operators goes in `cause`
 * and is logged, never sent. OAuth-style errors (RFC 6750 §3, RFC 6749 §5.2) also carry
 * the `error` attribute of WWW-Authenticate / the JSON body.
 *
 * Subclasses exist where callers need more than the code (sessions/errors.ts: the
 * throttle's Retry-After, the invalid_grant reason for the log; ConfigError's problems).
 */

/**
 * The response header on every answer the gateway makes itself (plugins/errors.ts
 * sendError; the WebSocket refusals of proxy/websocket.ts), its value the answer's `code`.
 * The proxy strips it from upstream answers (proxy/response-headers.ts NOT_FROM_UPSTREAM),
 * so its presence tells a client that the gateway, not an upstream, refused: the client SDK
 * refreshes, ends a session or reports a wrong password only then
 * (fix-client-trusts-upstream-answers); every CORS policy exposes it (pipeline/cors.ts). No
 * `x-` prefix (RFC 6648).
 */
export const GATEWAY_ERROR_HEADER = 'portcullis-error'

/** Every code a client or operator can see, in one place. */
export const ErrorCode = {
  // request shape (the HTTP edge)
  badRequest: 'bad_request',
  pathRejected: 'path_rejected',
  badHost: 'bad_host',
  duplicateHeader: 'duplicate_header',
  duplicateJsonMember: 'duplicate_json_member',
  unsupportedTransferEncoding: 'unsupported_transfer_encoding',
  tokenInQuery: 'token_in_query',
  methodOverride: 'method_override',
  badUpgrade: 'bad_upgrade',
  connectionClosing: 'connection_closing',
  notFound: 'route_not_found',
  methodNotAllowed: 'method_not_allowed',
  payloadTooLarge: 'payload_too_large',
  /** server.requestTimeout passed before the request was whole */
  requestTimeout: 'request_timeout',
  unsupportedMediaType: 'unsupported_media_type',
  headersTooLarge: 'headers_too_large',
  corsRejected: 'cors_rejected',
  // credentials
  missingToken: 'missing_token',
  malformedAuthorization: 'malformed_authorization',
  tokenTooLarge: 'token_too_large',
  tokenMalformed: 'token_malformed',
  tokenExpired: 'token_expired',
  tokenNotYetValid: 'token_not_yet_valid',
  tokenIssuedInFuture: 'token_issued_in_future',
  tokenLifetimeTooLong: 'token_lifetime_too_long',
  tokenBadSignature: 'token_invalid_signature',
  tokenBadAlgorithm: 'token_invalid_algorithm',
  tokenBadType: 'token_invalid_type',
  tokenUnknownKey: 'token_unknown_key',
  tokenKeysUnavailable: 'token_keys_unavailable',
  tokenBadIssuer: 'token_invalid_issuer',
  tokenIssuerNotAllowed: 'token_issuer_not_allowed',
  tokenBadAudience: 'token_invalid_audience',
  tokenMissingClaim: 'token_missing_claim',
  tokenBadClaim: 'token_invalid_claim',
  tokenUnsupportedCrit: 'token_unsupported_crit',
  tokenRevoked: 'token_revoked',
  insufficientScope: 'insufficient_scope',
  // upstream
  upstreamUnavailable: 'upstream_unavailable',
  upstreamTimeout: 'upstream_timeout',
  upstreamBusy: 'upstream_busy',
  /** the request bodies being read whole (routes[].requestBuffering) fill server.requestBufferBytes */
  gatewayBusy: 'gateway_busy',
  // sessions (auth endpoints, admin API, CLI)
  invalidCredentials: 'invalid_credentials',
  invalidGrant: 'invalid_grant',
  passwordEmpty: 'password_empty',
  passwordTooLong: 'password_too_long',
  passwordInput: 'password_input',
  tooManyAttempts: 'too_many_attempts',
  csrfOrigin: 'csrf_origin',
  csrfFetchSite: 'csrf_fetch_site',
  userExists: 'user_exists',
  userNotFound: 'user_not_found',
  sessionNotFound: 'session_not_found',
  invalidUserInput: 'invalid_user_input',
  adminUnauthorized: 'admin_unauthorized',
  adminHostNotAllowed: 'admin_host_not_allowed',
  storeUnavailable: 'store_unavailable',
  // identity providers' keys (logs, /readyz and metrics; never sent to a client, whose
  // token is refused with token_keys_unavailable or token_unknown_key)
  issuerKeysTimeout: 'issuer_keys_timeout',
  issuerKeysNetwork: 'issuer_keys_network',
  issuerKeysRedirect: 'issuer_keys_redirect_refused',
  issuerKeysHttpStatus: 'issuer_keys_http_status',
  issuerKeysTooLarge: 'issuer_keys_response_too_large',
  issuerKeysInvalidJson: 'issuer_keys_invalid_json',
  issuerKeysInvalidJwks: 'issuer_keys_invalid_jwks',
  issuerKeysTooManyKeys: 'issuer_keys_too_many_keys',
  issuerKeysNoUsableKeys: 'issuer_keys_no_usable_keys',
  issuerKeysInvalidDiscovery: 'issuer_keys_invalid_discovery',
  issuerKeysIssuerMismatch: 'issuer_keys_discovery_issuer_mismatch',
  issuerKeysInsecureUrl: 'issuer_keys_insecure_url',
  issuerKeysClosed: 'issuer_keys_closed',
  // operations
  configInvalid: 'config_invalid',
  reloadFailed: 'reload_failed',
  // service
  serviceUnavailable: 'service_unavailable',
  internal: 'internal_error',
} as const
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode]

export const OAuthError = {
  invalidRequest: 'invalid_request',
  invalidToken: 'invalid_token',
  insufficientScope: 'insufficient_scope',
  invalidGrant: 'invalid_grant',
} as const
export type OAuthError = typeof OAuthError[keyof typeof OAuthError]

export interface GatewayErrorOptions {
  cause?: unknown
  /** the RFC 6750 `error` value for WWW-Authenticate / the body; absent → no `error` attribute */
  oauthError?: OAuthError | undefined
  /** RFC 6750 §3 `scope` attribute on insufficient_scope */
  scope?: string | undefined
  /** seconds, for 429 and 503 */
  retryAfterSec?: number | undefined
}

export class GatewayError extends Error {
  readonly code: ErrorCode
  readonly statusCode: number
  readonly oauthError: OAuthError | undefined
  readonly scope: string | undefined
  readonly retryAfterSec: number | undefined

  constructor (code: ErrorCode, statusCode: number, message: string, options: GatewayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = new.target.name
    this.code = code
    this.statusCode = statusCode
    this.oauthError = options.oauthError
    this.scope = options.scope
    this.retryAfterSec = options.retryAfterSec
  }

  /** whether the message may be sent to a client (everything from 500 up stays in the log) */
  get expose (): boolean { return this.statusCode < 500 }
}

/** a CONNECT asks for a tunnel, which the gateway never opens (app.ts answers it; explain predicts it) */
/** a request not whole within server.requestTimeout (HTTP/1.1: Node's parser; HTTP/2: plugins/edge.ts) */
export const REQUEST_TIMEOUT_MESSAGE = 'the request was not received in time'

export const CONNECT_REFUSED_MESSAGE = 'CONNECT is not supported: this gateway forwards requests, it does not tunnel'

/** no route's prefix matches the request path */
export function routeNotFound (): GatewayError {
  return new GatewayError(ErrorCode.notFound, 404, 'no route matches this path')
}

/** 401 invalid_token with a description clients may show or act on (an expired token says so) */
export function invalidToken (code: ErrorCode, description: string, cause?: unknown): GatewayError {
  return new GatewayError(code, 401, description, { oauthError: OAuthError.invalidToken, cause })
}

/** 400 invalid_request (RFC 6750 §3.1): the request carries credentials in a way we refuse */
export function invalidRequest (code: ErrorCode, description: string): GatewayError {
  return new GatewayError(code, 400, description, { oauthError: OAuthError.invalidRequest })
}

/** 400 for a request whose framing or headers could be read two ways (RFC 9112 §3.2, §6) */
export function badRequest (code: ErrorCode, message: string): GatewayError {
  return new GatewayError(code, 400, message)
}

export interface ConfigProblem {
  /** JSON-pointer-like path, e.g. /routes/0/upstream */
  path: string
  message: string
  /** 1-based line in the YAML source, when known */
  line?: number
}

/** Raised at boot or reload for a bad configuration: every problem, each as `path: message`. */
export class ConfigError extends GatewayError {
  readonly problems: readonly ConfigProblem[]

  constructor (problems: readonly ConfigProblem[], source: string) {
    super(ErrorCode.configInvalid, 500, `invalid configuration in ${source}:\n` + problems.map(formatProblem).join('\n'))
    this.problems = problems
  }
}

export function formatProblem (p: ConfigProblem): string {
  return `- ${p.path || '/'}: ${p.message}${p.line === undefined ? '' : ` (line ${p.line})`}`
}
