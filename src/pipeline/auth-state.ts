import type { VerifiedToken } from '../tokens/verified-token.js'

/**
 * Why a request was let through: the `reason` of the decision log line. A refused request's
 * reason is the stable error `code` that refused it (src/errors.ts).
 */
export const Reason = {
  pending: 'pending',
  granted: 'granted',
  anonymous: 'anonymous',
  public: 'public',
  preflight: 'cors_preflight',
  /** the client went away before its response was complete (status 499 in the decision line) */
  clientClosed: 'client_closed',
} as const

/** What the pipeline learned about a request, read by header rewriting, the decision log and metrics. */
export interface AuthState {
  /** the route's name, or the gateway endpoint's (`auth.login`, `jwks`); '' before routing */
  route: string
  granted: boolean
  /** a Reason or the error code that refused the request */
  reason: string
  token: VerifiedToken | undefined
  /** the subject when known without a token object (auth endpoints: the user logged in) */
  sub: string | undefined
}

export function newAuthState (route = ''): AuthState {
  return { route, granted: false, reason: Reason.pending, token: undefined, sub: undefined }
}
