import type { VerifiedToken } from '../tokens/verifier.js'

/**
 * Why a request was let through: the `reason` of the decision log line. A refused request's
 * reason is the stable error `code` that refused it (src/errors.ts).
 */
export const Reason = {
  pending: 'pending',
  granted: 'granted',
  anonymous: 'anonymous',
  public: 'public',
  pathRejected: 'path_rejected',
} as const

/** What the pipeline learned about a request, read by header rewriting and the decision log. */
export interface AuthState {
  route: string
  granted: boolean
  /** a Reason or the error code that refused the request */
  reason: string
  token: VerifiedToken | undefined
}
