/**
 * One error hierarchy for everything a client can be told. Each error has a stable
 * `code` (tests and clients match on it), an HTTP `statusCode`, and a public message
 * that is safe to send. Detail for operators goes in `cause` and is logged, never sent.
 * OAuth-style errors (RFC 6750 §3) also carry the `error` attribute of WWW-Authenticate.
 */

export const OAuthError = {
  invalidRequest: 'invalid_request',
  invalidToken: 'invalid_token',
  insufficientScope: 'insufficient_scope',
  invalidGrant: 'invalid_grant',
} as const
export type OAuthError = typeof OAuthError[keyof typeof OAuthError]

export interface GatewayErrorOptions {
  cause?: unknown
  /** the RFC 6750 `error` value for WWW-Authenticate; absent → no `error` attribute */
  oauthError?: OAuthError
  /** RFC 6750 §3 `scope` attribute on insufficient_scope */
  scope?: string
  /** seconds, for 429 and 503 */
  retryAfterSec?: number
}

export class GatewayError extends Error {
  readonly code: string
  readonly statusCode: number
  readonly oauthError: OAuthError | undefined
  readonly scope: string | undefined
  readonly retryAfterSec: number | undefined

  constructor (code: string, statusCode: number, message: string, options: GatewayErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'GatewayError'
    this.code = code
    this.statusCode = statusCode
    this.oauthError = options.oauthError
    this.scope = options.scope
    this.retryAfterSec = options.retryAfterSec
  }
}

/** Every code a client can see, in one place. */
export const ErrorCode = {
  // request shape
  badRequest: 'bad_request',
  pathRejected: 'path_rejected',
  notFound: 'route_not_found',
  methodNotAllowed: 'method_not_allowed',
  payloadTooLarge: 'payload_too_large',
  unsupportedMediaType: 'unsupported_media_type',
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
  tokenBadIssuer: 'token_invalid_issuer',
  tokenBadAudience: 'token_invalid_audience',
  tokenMissingClaim: 'token_missing_claim',
  tokenBadClaim: 'token_invalid_claim',
  tokenUnsupportedCrit: 'token_unsupported_crit',
  tokenRevoked: 'token_revoked',
  insufficientScope: 'insufficient_scope',
  // upstream
  upstreamUnavailable: 'upstream_unavailable',
  upstreamTimeout: 'upstream_timeout',
  // service
  serviceUnavailable: 'service_unavailable',
  internal: 'internal_error',
} as const
export type ErrorCode = typeof ErrorCode[keyof typeof ErrorCode]

/** 401 invalid_token with a description clients may show or act on. */
/** no route's prefix matches the request path */
export function routeNotFound (): GatewayError {
  return new GatewayError(ErrorCode.notFound, 404, 'no route matches this path')
}

export function invalidToken (code: ErrorCode, description: string, cause?: unknown): GatewayError {
  return new GatewayError(code, 401, description, { oauthError: OAuthError.invalidToken, cause })
}

export function invalidRequest (code: ErrorCode, description: string): GatewayError {
  return new GatewayError(code, 400, description, { oauthError: OAuthError.invalidRequest })
}

/** Raised at boot for a bad configuration: every problem, each as `path: message`. */
export class ConfigError extends Error {
  readonly code = 'config_invalid'
  readonly problems: readonly ConfigProblem[]

  constructor (problems: readonly ConfigProblem[], source: string) {
    super(`invalid configuration in ${source}:\n` + problems.map(formatProblem).join('\n'))
    this.name = 'ConfigError'
    this.problems = problems
  }
}

export interface ConfigProblem {
  /** JSON-pointer-like path, e.g. /routes/0/upstream */
  path: string
  message: string
  /** 1-based line in the YAML source, when known */
  line?: number
}

export function formatProblem (p: ConfigProblem): string {
  return `- ${p.path || '/'}: ${p.message}${p.line === undefined ? '' : ` (line ${p.line})`}`
}
