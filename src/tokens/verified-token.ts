import { createHash } from 'node:crypto'
import type { IdentityHeader } from './identity.js'

/** a verification key that may be withdrawn (an identity provider stopped publishing it) */
export interface KeyHandle {
  alive: boolean
}

/** What an issuer's verification establishes about a token. */
export interface IssuerVerdict {
  /** `self` for the gateway's own tokens, else the configured issuer's name */
  readonly issuer: string
  readonly claims: Readonly<Record<string, unknown>>
  /**
   * undefined for an identity provider's token without `sub` (its requiredClaims leave it
   * out): such a token has no subject — no `sub` header, none in the assertion — rather than
   * the subject "" that every such token shared (fix-subless-token-one-identity)
   */
  readonly sub: string | undefined
  /** absent on some identity providers' tokens (their revocation key is then their signed text's: revocationJtiKey) */
  readonly jti: string | undefined
  readonly scopes: ReadonlySet<string>
  readonly expMs: number
  /** earliest instant the token is valid (nbf − skew), 0 when no nbf */
  readonly notBeforeMs: number
  /** the issuer's clock tolerance: the token is refused from expMs + skewMs on */
  readonly skewMs: number
  /** the remote key that verified it; a cached token stops verifying when the key is withdrawn */
  readonly key: KeyHandle | undefined
}

/**
 * What the pipeline keeps of a verified token, whoever issued it. Built once per distinct
 * token (the verify cache holds it), never per request.
 */
export interface VerifiedToken extends IssuerVerdict {
  /** identity headers for the upstream, computed at verification */
  readonly identity: readonly IdentityHeader[]
  /**
   * The key under which this token's `jti` is revoked (revocationJtiKey): the jti itself for
   * the gateway's own tokens, the issuer and jti together for an identity provider's, whose
   * jtis are its own (fix-logout-trusts-foreign-token); for a provider's token without a jti, its
   * signed text's hash. Undefined only for the gateway's own tokens without a jti (refused).
   */
  readonly revocationJti: string | undefined
  /**
   * The whole compact token: what tells one token from another when the same token was
   * verified twice into two objects (the verify cache admits a token on its second use, or is
   * off), e.g. for reusing its assertion. The whole text, not its signature segment: a key
   * chosen to make a victim's signature verify over other claims (ECDSA key substitution by
   * an issuer the route also accepts) would otherwise share the victim's entry. It is the
   * credential itself: never logged, never sent.
   */
  readonly text: string
}

/** marks a foreign jti's key: never a prefix of the gateway's own (UUIDs) */
const FOREIGN_JTI_PREFIX = 'iss-jti:'
/** marks the key of a foreign token without a jti (fix-logout-revokes-token-without-jti) */
const FOREIGN_TOKEN_PREFIX = 'iss-tok:'

/**
 * The denylist key of a token's jti. An identity provider chooses its tokens' jtis: one that
 * names a jti of the gateway's own tokens (or another provider's) must not revoke them when it
 * is logged out, so a foreign jti is kept under its issuer, hashed to a fixed size (a jti near
 * the token size limit would overflow PostgreSQL's 8,000-byte NOTIFY payload and fail the
 * logout). The gateway's own keep the bare jti (a UUID), as stored before this key existed.
 * `iss` is the token's `iss` claim. Computed once per verified token, never per request.
 *
 * A provider's token without a jti (Auth0's default profile, Entra ID) is keyed by its signing
 * input (`header.payload`, the text the signature covers) when `token` is given: logging it out
 * then revokes that one token, where it revoked nothing before. The signing input, not the whole
 * text: an ECDSA signature has a second value that verifies (s and n − s; splitToken already
 * refuses other spellings of the same bytes), the signed text has one; and no other token
 * shares it, since its claims (iss, exp, iat, sub) are inside it.
 */
export function revocationJtiKey (own: boolean, iss: unknown, jti: string | undefined, token?: string): string | undefined {
  if (jti === undefined) {
    if (own || token === undefined) return undefined
    const end = token.lastIndexOf('.')
    if (end <= 0) return undefined
    return FOREIGN_TOKEN_PREFIX + createHash('sha256').update(token.slice(0, end), 'utf8').digest('base64url')
  }
  if (own) return jti
  return FOREIGN_JTI_PREFIX + createHash('sha256').update(JSON.stringify([typeof iss === 'string' ? iss : '', jti]), 'utf8').digest('base64url')
}
