import { isUtf8 } from 'node:buffer'
import { scopeSet } from './scopes.js'
import { createVerifier } from 'fast-jwt'
import { ErrorCode, invalidToken } from '../errors.js'
import { SELF_ISSUER, type GatewayConfig } from '../config/types.js'
import type { KeySet } from './keys.js'
import type { LifetimeHistory } from './lifetimes.js'
import { badClaim, isNumericDate, malformed, translateJwtError } from './jwt-errors.js'
import { decodeSegment, refuseCritical } from './jwt-parts.js'
import type { IssuerVerdict } from './verified-token.js'

type Verify = (token: string) => Record<string, unknown>

const REQUIRED_CLAIMS = ['exp', 'iat', 'iss', 'aud', 'sub', 'jti']
const MAX_HEADER_SEGMENTS = 64

/**
 * Verifies the gateway's own access tokens (`tokens:`), RFC 9068 profile. Built once per
 * configuration: one fast-jwt verifier per kid, the algorithm pinned to the configured one
 * (never chosen by the token), `typ` = at+jwt, unknown `crit` refused, `iss` exact, `aud`
 * must contain ours, `exp iat iss aud sub jti` required, `iat` in the future refused,
 * `exp − iat` capped. `jwk`/`jku`/`x5u`/`x5c` headers are never read: the key comes only
 * from our key set by `kid`. Time is checked by the caller against an injected clock.
 */
export class SelfIssuer {
  readonly issuer: string
  readonly #byKid = new Map<string, Verify>()
  readonly #algorithm: string
  readonly #onlyKey: Verify | undefined
  readonly #skewMs: number
  readonly #maxLifetimeSec: number
  /** header segment → its key's verifier, for headers already checked (bounded: see #pickKey) */
  readonly #byHeader = new Map<string, Verify>()

  readonly #earlier: LifetimeHistory | undefined

  /** `earlier`: the limits of the configurations before this one (a reload that shortened the lifetime) */
  constructor (keys: KeySet, tokens: GatewayConfig['tokens'], earlier?: LifetimeHistory) {
    this.issuer = tokens.issuer
    this.#algorithm = keys.algorithm
    for (const { kid, key } of keys.verifying.values()) {
      this.#byKid.set(kid, createVerifier({
        key,
        algorithms: [keys.algorithm],
        allowedIss: tokens.issuer,
        allowedAud: tokens.audience,
        requiredClaims: REQUIRED_CLAIMS,
        checkTyp: 'at+jwt',
        ignoreExpiration: true, // checked by the caller with our clock and our error codes
        ignoreNotBefore: true,
        cache: false, // our own cache keeps the identity headers too
      }) as Verify)
    }
    this.#onlyKey = this.#byKid.size === 1 ? [...this.#byKid.values()][0] : undefined
    this.#skewMs = tokens.clockSkewSec * 1000
    this.#maxLifetimeSec = tokens.maxTokenLifetimeSec
    this.#earlier = earlier
  }

  /** throws 401 invalid_token for every way the token can be wrong */
  verify (token: string, headerSegment: string, payloadSegment: string, nowMs: number): IssuerVerdict {
    const verify = this.#pickKey(headerSegment)
    // fast-jwt would decode invalid UTF-8 into U+FFFD (RFC 7519 §7.2: malformed)
    if (!isUtf8(Buffer.from(payloadSegment, 'base64url'))) throw malformed()
    let claims: Record<string, unknown>
    try {
      claims = verify(token)
    } catch (err) {
      throw translateJwtError(err)
    }
    return this.#checkClaims(claims, nowMs)
  }

  #pickKey (segment: string): Verify {
    // every token this gateway signs with one key has the same header segment: the checks
    // below run once per distinct segment, not once per token
    const known = this.#byHeader.get(segment)
    if (known !== undefined) return known
    const verify = this.#checkHeader(segment)
    // the bound keeps headers crafted to differ (extra fields, key order) from filling memory
    if (this.#byHeader.size < MAX_HEADER_SEGMENTS) this.#byHeader.set(segment, verify)
    return verify
  }

  #checkHeader (segment: string): Verify {
    const header = decodeSegment(segment)
    refuseCritical(header)
    // the algorithm is pinned by configuration; a token naming another (none, HS256 against
    // a public key…) is refused before any key is touched (RFC 8725 §3.1, §2.1)
    if (header.alg !== this.#algorithm) {
      throw invalidToken(ErrorCode.tokenBadAlgorithm, 'the access token uses an algorithm this gateway does not accept')
    }
    const kid = header.kid
    if (kid === undefined && this.#onlyKey !== undefined) return this.#onlyKey
    const verify = typeof kid === 'string' ? this.#byKid.get(kid) : undefined
    if (verify === undefined) throw invalidToken(ErrorCode.tokenUnknownKey, 'the access token was signed with an unknown key')
    return verify
  }

  #checkClaims (claims: Record<string, unknown>, nowMs: number): IssuerVerdict {
    const { sub, jti, iat, exp, nbf, scope } = claims
    if (typeof sub !== 'string' || sub === '') throw badClaim('sub')
    if (typeof jti !== 'string' || jti === '') throw badClaim('jti')
    if (!isNumericDate(iat)) throw badClaim('iat')
    if (!isNumericDate(exp)) throw badClaim('exp')
    if (nbf !== undefined && !isNumericDate(nbf)) throw badClaim('nbf')
    if (scope !== undefined && typeof scope !== 'string') throw badClaim('scope') // RFC 9068 §2.2.3
    if (iat * 1000 > nowMs + this.#skewMs) {
      throw invalidToken(ErrorCode.tokenIssuedInFuture, 'the access token was issued in the future')
    }
    if (exp - iat > this.#maxLifetimeSec && this.#earlier?.allowedEarlier(iat, exp - iat) !== true) {
      throw invalidToken(ErrorCode.tokenLifetimeTooLong, 'the access token lives longer than this gateway accepts')
    }
    return {
      issuer: SELF_ISSUER,
      claims,
      sub,
      jti,
      scopes: scopeSet(scope, false) ?? new Set(),
      expMs: exp * 1000,
      notBeforeMs: typeof nbf === 'number' ? nbf * 1000 - this.#skewMs : 0,
      skewMs: this.#skewMs,
      key: undefined,
    }
  }
}
