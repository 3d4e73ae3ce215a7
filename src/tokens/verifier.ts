import { createVerifier, TokenError } from 'fast-jwt'
import { ErrorCode, GatewayError, invalidToken } from '../errors.js'
import type { GatewayConfig } from '../config/types.js'
import type { KeySet } from './keys.js'
import { identityHeaders, type IdentityHeader } from './identity.js'

/** What the pipeline keeps of a verified token. Built once per distinct token. */
export interface VerifiedToken {
  readonly claims: Readonly<Record<string, unknown>>
  readonly sub: string
  readonly jti: string
  readonly scopes: ReadonlySet<string>
  /** identity headers for the upstream, computed at verification, not per request */
  readonly identity: readonly IdentityHeader[]
  readonly expMs: number
  /** earliest instant the token is valid (nbf − skew), 0 when no nbf */
  readonly notBeforeMs: number
}

type Verify = (token: string) => Record<string, unknown>

const REQUIRED_CLAIMS = ['exp', 'iat', 'iss', 'aud', 'sub', 'jti']
const MAX_HEADER_SEGMENTS = 64

/**
 * Verifies access tokens against the configured keys. Built once at boot: one fast-jwt
 * verifier per kid, the algorithm pinned to the configured one (never chosen by the token),
 * `typ` = at+jwt, unknown `crit` rejected, `iss` exact, `aud` must contain ours. Time claims
 * are checked here against an injected clock. `jwk`/`jku`/`x5u`/`x5c` headers are never read:
 * the key comes only from our key set by `kid`.
 */
export class TokenVerifier {
  readonly #byKid: Map<string, Verify>
  readonly #algorithm: string
  readonly #onlyKey: Verify | undefined
  readonly #skewMs: number
  readonly #maxLifetimeSec: number
  readonly #maxTokenBytes: number
  readonly #config: GatewayConfig['identity']
  readonly #cache: VerifiedCache | undefined
  /** header segment → its key's verifier, for headers already checked (bounded: see #pickKey) */
  readonly #byHeader = new Map<string, Verify>()

  constructor (keys: KeySet, config: GatewayConfig) {
    const t = config.tokens
    this.#byKid = new Map()
    this.#algorithm = keys.algorithm
    for (const { kid, key } of keys.verifying.values()) {
      this.#byKid.set(kid, createVerifier({
        key,
        algorithms: [keys.algorithm],
        allowedIss: t.issuer,
        allowedAud: t.audience,
        requiredClaims: REQUIRED_CLAIMS,
        checkTyp: 'at+jwt',
        ignoreExpiration: true, // checked below with our clock and our error codes
        ignoreNotBefore: true,
        cache: false, // our own cache keeps the identity headers too
      }) as Verify)
    }
    this.#onlyKey = this.#byKid.size === 1 ? [...this.#byKid.values()][0] : undefined
    this.#skewMs = t.clockSkewSec * 1000
    this.#maxLifetimeSec = t.maxTokenLifetimeSec
    this.#maxTokenBytes = t.maxTokenBytes
    this.#config = config.identity
    this.#cache = t.verifyCacheSize > 0 ? new VerifiedCache(t.verifyCacheSize) : undefined
  }

  /** Throws a GatewayError (401 invalid_token) for every way a token can be wrong. */
  verify (token: string, nowMs: number): VerifiedToken {
    const cached = this.#cache?.get(token)
    if (cached !== undefined) {
      this.#checkTime(cached, nowMs)
      return cached
    }
    if (token.length > this.#maxTokenBytes) throw invalidToken(ErrorCode.tokenTooLarge, 'the access token is too large')
    const verify = this.#pickKey(token)
    let claims: Record<string, unknown>
    try {
      claims = verify(token)
    } catch (err) {
      throw translateJwtError(err)
    }
    const verified = this.#checkClaims(claims, nowMs)
    this.#checkTime(verified, nowMs)
    this.#cache?.admit(token, verified)
    return verified
  }

  get cacheSize (): number { return this.#cache?.size ?? 0 }

  #pickKey (token: string): Verify {
    const dot = token.indexOf('.')
    if (dot <= 0) throw invalidToken(ErrorCode.tokenMalformed, 'the access token is malformed')
    // every token this gateway signs with one key has the same header segment: the checks
    // below run once per distinct segment, not once per token
    const segment = token.slice(0, dot)
    const known = this.#byHeader.get(segment)
    if (known !== undefined) return known
    const verify = this.#checkHeader(segment)
    // the bound keeps headers crafted to differ (extra fields, key order) from filling memory
    if (this.#byHeader.size < MAX_HEADER_SEGMENTS) this.#byHeader.set(segment, verify)
    return verify
  }

  #checkHeader (segment: string): Verify {
    let header: unknown
    try {
      header = JSON.parse(Buffer.from(segment, 'base64url').toString('utf8'))
    } catch {
      throw invalidToken(ErrorCode.tokenMalformed, 'the access token is malformed')
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) {
      throw invalidToken(ErrorCode.tokenMalformed, 'the access token is malformed')
    }
    // the algorithm is pinned by configuration; a token naming another (none, HS256 against
    // a public key…) is refused before any key is touched (RFC 8725 §3.1, §2.1)
    if ((header as { alg?: unknown }).alg !== this.#algorithm) {
      throw invalidToken(ErrorCode.tokenBadAlgorithm, 'the access token uses an algorithm this gateway does not accept')
    }
    const kid = (header as { kid?: unknown }).kid
    if (kid === undefined && this.#onlyKey !== undefined) return this.#onlyKey
    const verify = typeof kid === 'string' ? this.#byKid.get(kid) : undefined
    if (verify === undefined) throw invalidToken(ErrorCode.tokenUnknownKey, 'the access token was signed with an unknown key')
    return verify
  }

  #checkClaims (claims: Record<string, unknown>, nowMs: number): VerifiedToken {
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
    if (exp - iat > this.#maxLifetimeSec) {
      throw invalidToken(ErrorCode.tokenLifetimeTooLong, 'the access token lives longer than this gateway accepts')
    }
    return {
      claims,
      sub,
      jti,
      scopes: new Set(typeof scope === 'string' ? scope.split(' ').filter(s => s !== '') : []),
      identity: identityHeaders(claims, this.#config),
      expMs: exp * 1000,
      notBeforeMs: typeof nbf === 'number' ? nbf * 1000 - this.#skewMs : 0,
    }
  }

  #checkTime (t: VerifiedToken, nowMs: number): void {
    if (nowMs >= t.expMs + this.#skewMs) throw invalidToken(ErrorCode.tokenExpired, 'the access token expired')
    if (nowMs < t.notBeforeMs) throw invalidToken(ErrorCode.tokenNotYetValid, 'the access token is not valid yet')
  }
}

function isNumericDate (v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

function badClaim (claim: string): GatewayError {
  return invalidToken(ErrorCode.tokenBadClaim, `the access token has an invalid ${claim} claim`)
}

const JWT_ERRORS: Record<string, [ErrorCode, string]> = {
  [TokenError.codes.invalidAlgorithm]: [ErrorCode.tokenBadAlgorithm, 'the access token uses an algorithm this gateway does not accept'],
  [TokenError.codes.invalidSignature]: [ErrorCode.tokenBadSignature, 'the access token signature is invalid'],
  [TokenError.codes.missingSignature]: [ErrorCode.tokenBadSignature, 'the access token is not signed'],
  [TokenError.codes.invalidType]: [ErrorCode.tokenBadType, 'the token is not an access token (typ must be at+jwt)'],
  [TokenError.codes.invalidCritHeader]: [ErrorCode.tokenUnsupportedCrit, 'the access token has a critical header this gateway does not understand'],
  [TokenError.codes.missingRequiredClaim]: [ErrorCode.tokenMissingClaim, 'the access token lacks a required claim'],
  [TokenError.codes.malformed]: [ErrorCode.tokenMalformed, 'the access token is malformed'],
  [TokenError.codes.invalidPayload]: [ErrorCode.tokenMalformed, 'the access token is malformed'],
}

/** The one place fast-jwt errors become client errors; the original is kept as cause. */
export function translateJwtError (err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  const code = (err as { code?: string }).code
  const message = (err as { message?: string }).message ?? ''
  if (code === TokenError.codes.invalidClaimValue || code === TokenError.codes.invalidClaimType) {
    if (/\biss\b/.test(message)) return invalidToken(ErrorCode.tokenBadIssuer, 'the access token was issued by someone else', err)
    if (/\baud\b/.test(message)) return invalidToken(ErrorCode.tokenBadAudience, 'the access token is meant for another audience', err)
    return invalidToken(ErrorCode.tokenBadClaim, 'the access token has an invalid claim', err)
  }
  const known = code === undefined ? undefined : JWT_ERRORS[code]
  if (known !== undefined) return invalidToken(known[0], known[1], err)
  // anything else (a key error, a crypto failure on garbage input) is still the token's fault
  return invalidToken(ErrorCode.tokenMalformed, 'the access token is invalid', err)
}

/**
 * Verified tokens by their exact text (signature included, so nothing forged can hit),
 * bounded; the oldest insertion leaves first. An entry past its exp is refused on every read
 * (the time check runs on hits too) until newer entries push it out.
 *
 * A token enters on its second verification, not its first: a client reuses its token for
 * minutes, so this costs one more verify per token, while tokens seen once (a flood of new
 * ones) never churn the cache or keep memory alive. "Seen before" is one bit per hash of the
 * signature's last characters, cleared once as many tokens as the cache holds have set bits:
 * a collision only admits a token early, and the cache key is still the whole token, so
 * nothing unverified can ever hit.
 *
 * Insertion order is kept in a ring of keys, not read back from the Map: a Map whose oldest
 * entries are deleted keeps them as holes that `keys().next()` walks over until the next
 * rehash, which doubled the cost of a miss when every token is new (bench/micro-hotpath.ts).
 */
class VerifiedCache {
  readonly #map = new Map<string, VerifiedToken>()
  readonly #ring: Array<string | undefined>
  #next = 0
  readonly #seen: Uint32Array
  readonly #seenMask: number
  #seenCount = 0

  constructor (max: number) {
    this.#ring = new Array<string | undefined>(max).fill(undefined)
    const bits = 2 ** Math.ceil(Math.log2(max * 8)) // ≤ 1 in 8 bits set before a clear
    this.#seen = new Uint32Array(bits / 32)
    this.#seenMask = bits - 1
  }

  get (token: string): VerifiedToken | undefined { return this.#map.get(token) }

  /** called after a verification: caches the token if it was verified once before */
  admit (token: string, value: VerifiedToken): void {
    const bit = fingerprint(token) & this.#seenMask
    const word = bit >>> 5
    const mask = 1 << (bit & 31)
    const seen = this.#seen[word] as number
    if ((seen & mask) === 0) {
      if (++this.#seenCount > this.#ring.length) { this.#seen.fill(0); this.#seenCount = 1 }
      this.#seen[word] = (this.#seen[word] as number) | mask
      return
    }
    const oldest = this.#ring[this.#next]
    if (oldest !== undefined) this.#map.delete(oldest)
    this.#ring[this.#next] = token
    this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1
    this.#map.set(token, value)
  }

  get size (): number { return this.#map.size }
}

/** FNV-1a over the last 16 characters: the end of the signature, random in every real token */
function fingerprint (token: string): number {
  let h = 0x811c9dc5
  for (let i = Math.max(0, token.length - 16); i < token.length; i++) {
    h = Math.imul(h ^ token.charCodeAt(i), 0x01000193)
  }
  return h >>> 0
}
