import { ErrorCode, GatewayError, invalidToken } from '../errors.js'
import type { VerifiedToken } from '../tokens/verified-token.js'
import type { Denylist } from './denylist.js'
import { extractBearer } from './extract.js'

/** the request headers that can carry a token: Authorization, or for a WebSocket upgrade its protocols */
export interface CredentialHeaders {
  authorization?: string | undefined
  'sec-websocket-protocol'?: string | string[] | undefined
}

/** What the authenticate stage needs: built once per configuration, shared by the proxy and the auth endpoints. */
export interface Authenticator {
  /** sync on the hot path; a promise only while an unknown key of an external issuer is fetched (single-flight) */
  verify: (token: string, nowMs: number) => VerifiedToken | Promise<VerifiedToken>
  denylist: Denylist
}

/**
 * The authenticate stage: `Authorization: Bearer` → a verified, unrevoked token, or
 * undefined when the request carries no bearer credentials ("not my token" is not "invalid
 * token": another scheme is left alone). A malformed header is 400, a bad token 401.
 * Used by every proxied route and by the auth endpoints (logout, logout-all), so a revoked
 * token is refused everywhere (issue 9: logout accepted a revoked token).
 */
export function authenticate (auth: Authenticator, headers: CredentialHeaders, nowMs: number, handshake = false): VerifiedToken | undefined | Promise<VerifiedToken> {
  // the bearer subprotocol is a WebSocket handshake's only: on a plain request (an `Upgrade`
  // header without `Connection: upgrade` is one) it authenticated the request and then reached
  // the upstream in the copied header (fix-subprotocol-token-on-plain-request)
  const raw = extractBearer(headers.authorization, handshake ? headers['sec-websocket-protocol'] : undefined)
  if (raw === undefined) return undefined
  const verified = auth.verify(raw, nowMs)
  if (verified instanceof Promise) return verified.then(token => notRevoked(auth.denylist, token))
  return notRevoked(auth.denylist, verified)
}

function notRevoked (denylist: Denylist, token: VerifiedToken): VerifiedToken {
  if (denylist.check(token.claims, token.revocationJti) !== undefined) throw invalidToken(ErrorCode.tokenRevoked, 'the access token was revoked')
  return token
}

export function missingToken (): GatewayError {
  return new GatewayError(ErrorCode.missingToken, 401, 'an access token is required')
}
