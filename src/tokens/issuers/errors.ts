/**
 * Why fetching an issuer's keys failed. These never reach a client (a token whose keys are
 * missing is refused with the verifier's own `token_unknown_key`); they go to the log and to
 * `RemoteKeySet.status.lastError`, which readiness and metrics read. Stable `code`s so an
 * operator can alert on them.
 */
export const IssuerKeysErrorCode = {
  /** the whole exchange (connect, headers, body) took longer than fetchTimeoutMs */
  timeout: 'issuer_keys_timeout',
  /** connection refused, reset, DNS, TLS… */
  network: 'issuer_keys_network',
  /** a 3xx: redirects are never followed */
  redirect: 'issuer_keys_redirect_refused',
  /** any status other than 200 */
  httpStatus: 'issuer_keys_http_status',
  /** body (or its Content-Length) above maxResponseBytes */
  tooLarge: 'issuer_keys_response_too_large',
  /** body is not UTF-8 JSON */
  invalidJson: 'issuer_keys_invalid_json',
  /** JSON, but not `{ "keys": [...] }` */
  invalidJwks: 'issuer_keys_invalid_jwks',
  /** more entries in `keys` than maxKeys */
  tooManyKeys: 'issuer_keys_too_many_keys',
  /** a well-formed set with no key usable for the pinned algorithms */
  noUsableKeys: 'issuer_keys_no_usable_keys',
  /** the discovery document is not a JSON object with a usable `jwks_uri` */
  invalidDiscovery: 'issuer_keys_invalid_discovery',
  /** the discovery document names another issuer (OIDC Discovery 1.0 §4.3) */
  issuerMismatch: 'issuer_keys_discovery_issuer_mismatch',
  /** a URL that is not https (or loopback http when allowed) */
  insecureUrl: 'issuer_keys_insecure_url',
  /** close() was called while a fetch was running */
  closed: 'issuer_keys_closed',
} as const
export type IssuerKeysErrorCode = typeof IssuerKeysErrorCode[keyof typeof IssuerKeysErrorCode]

export class IssuerKeysError extends Error {
  readonly code: IssuerKeysErrorCode

  constructor (code: IssuerKeysErrorCode, message: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause })
    this.name = 'IssuerKeysError'
    this.code = code
  }
}
