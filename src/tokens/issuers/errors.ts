import { ErrorCode, GatewayError } from '../../errors.js'

/**
 * Why fetching an issuer's keys failed. These never reach a client (a token whose keys are
 * missing is refused with the verifier's own `token_unknown_key`); they go to the log and to
 * `RemoteKeySet.status.lastError`, which readiness and metrics read. Stable `code`s so an
 * operator can alert on them.
 */
export const IssuerKeysErrorCode = {
  /** the whole exchange (connect, headers, body) took longer than fetchTimeoutMs */
  timeout: ErrorCode.issuerKeysTimeout,
  /** connection refused, reset, DNS, TLS… */
  network: ErrorCode.issuerKeysNetwork,
  /** a 3xx: redirects are never followed */
  redirect: ErrorCode.issuerKeysRedirect,
  /** any status other than 200 */
  httpStatus: ErrorCode.issuerKeysHttpStatus,
  /** body (or its Content-Length) above maxResponseBytes */
  tooLarge: ErrorCode.issuerKeysTooLarge,
  /** body is not UTF-8 JSON */
  invalidJson: ErrorCode.issuerKeysInvalidJson,
  /** JSON, but not `{ "keys": [...] }` */
  invalidJwks: ErrorCode.issuerKeysInvalidJwks,
  /** more entries in `keys` than maxKeys */
  tooManyKeys: ErrorCode.issuerKeysTooManyKeys,
  /** a well-formed set with no key usable for the pinned algorithms */
  noUsableKeys: ErrorCode.issuerKeysNoUsableKeys,
  /** the discovery document is not a JSON object with a usable `jwks_uri` */
  invalidDiscovery: ErrorCode.issuerKeysInvalidDiscovery,
  /** the discovery document names another issuer (OIDC Discovery 1.0 §4.3) */
  issuerMismatch: ErrorCode.issuerKeysIssuerMismatch,
  /** a URL that is not https (or loopback http when allowed) */
  insecureUrl: ErrorCode.issuerKeysInsecureUrl,
  /** close() was called while a fetch was running */
  closed: ErrorCode.issuerKeysClosed,
} as const
export type IssuerKeysErrorCode = typeof IssuerKeysErrorCode[keyof typeof IssuerKeysErrorCode]

/** one of the registry's codes (src/errors.ts); 503 were it ever answered, since the gateway cannot verify */
export class IssuerKeysError extends GatewayError {
  declare readonly code: IssuerKeysErrorCode

  constructor (code: IssuerKeysErrorCode, message: string, cause?: unknown) {
    super(code, 503, message, { cause })
  }
}
