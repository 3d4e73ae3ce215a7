import type { VerifiedToken } from '../tokens/verifier.js'

/** Why a request was let through or refused: the `reason` of the decision log line. */
export const Reason = {
  pending: 'pending',
  granted: 'granted',
  anonymous: 'anonymous',
  public: 'public',
  pathRejected: 'path_rejected',
  methodNotAllowed: 'method_not_allowed',
  missingToken: 'missing_token',
  malformedAuthorization: 'malformed_authorization',
  insufficientScope: 'insufficient_scope',
} as const

/** What the pipeline learned about a request, read by header rewriting and the decision log. */
export interface AuthState {
  route: string
  granted: boolean
  /** a Reason or the error code that refused the request */
  reason: string
  token: VerifiedToken | undefined
}
