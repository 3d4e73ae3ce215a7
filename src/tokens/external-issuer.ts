import { createVerifier } from 'fast-jwt'
import { scopeSet } from './scopes.js'
import type { IssuerConfig } from '../config/types.js'
import { ErrorCode, invalidToken } from '../errors.js'
import { claimAt } from './identity.js'
import { badClaim, isNumericDate, translateJwtError } from './jwt-errors.js'
import { refuseCritical } from './jwt-parts.js'
import type { RemoteKeySet } from './issuers/remote-key-set.js'
import type { RemoteKey } from './issuers/jwks.js'
import type { IssuerVerdict, KeyHandle } from './verified-token.js'

type Verify = (token: string) => Record<string, unknown>

/**
 * Verifies access tokens of one configured identity provider (`issuers[]`). Nothing about
 * key choice comes from the token beyond `kid` and `alg` within what is configured: the
 * issuer was chosen by exact `iss` (verifier.ts), the algorithm must be one pinned for it
 * (never HS*: the schema allows asymmetric ones only), and the key comes from its JWKS by
 * `kid` — `jku`, `x5u`, `jwk`, `x5c` are never read. `typ` must be one of the accepted
 * values (at+jwt unless `JWT` is opted into), `aud` must contain one of its audiences,
 * `exp` and the configured required claims must be present, `exp − iat` is capped.
 *
 * A token naming a kid the key set does not know triggers the one fetch the request path
 * may cause: single-flight with a cooldown inside RemoteKeySet, so a flood of random kids
 * costs one fetch. A key the provider stopped publishing stops verifying, cached tokens
 * included: the key set kills its handle (RemoteKey.handle), which every token it verified
 * carries.
 */
export class ExternalIssuer {
  readonly name: string
  readonly issuer: string
  readonly keys: RemoteKeySet
  readonly #config: IssuerConfig
  readonly #typ: ReadonlySet<string>
  readonly #algorithms: ReadonlySet<string>
  readonly #skewMs: number
  /** one verifier per key and algorithm, built on first use */
  readonly #verifiers = new WeakMap<RemoteKey, Map<string, Verify>>()

  constructor (config: IssuerConfig, keys: RemoteKeySet) {
    this.name = config.name
    this.issuer = config.issuer
    this.keys = keys
    this.#config = config
    this.#typ = new Set(config.typ.map(normalizeTyp))
    this.#algorithms = new Set(config.algorithms)
    this.#skewMs = config.clockSkewSec * 1000
  }

  /** throws 401 invalid_token for every way the token can be wrong; a promise only while an unknown kid is fetched */
  verify (token: string, header: Record<string, unknown>, nowMs: number): IssuerVerdict | Promise<IssuerVerdict> {
    refuseCritical(header)
    const alg = header.alg
    if (typeof alg !== 'string' || !this.#algorithms.has(alg)) {
      throw invalidToken(ErrorCode.tokenBadAlgorithm, 'the access token uses an algorithm this issuer is not trusted with')
    }
    if (typeof header.typ !== 'string' || !this.#typ.has(normalizeTyp(header.typ))) {
      throw invalidToken(ErrorCode.tokenBadType, 'the token is not an access token of an accepted type')
    }
    const accessTyped = normalizeTyp(header.typ) === 'at+jwt'
    const kid = header.kid
    if (kid !== undefined && typeof kid !== 'string') throw invalidToken(ErrorCode.tokenMalformed, 'the access token is malformed')
    const key = this.keys.remoteKey(kid, alg)
    if (key !== undefined) return this.#verifyWith(key, alg, token, nowMs, accessTyped)
    if (this.keys.status.keys === 0) {
      // nothing fetched yet (or everything expired): say why instead of "unknown key"
      if (kid !== undefined) this.keys.refetchForUnknownKid(kid).catch(() => {})
      throw invalidToken(ErrorCode.tokenKeysUnavailable, "the issuer's keys are not available yet; retry shortly")
    }
    if (kid === undefined) throw invalidToken(ErrorCode.tokenUnknownKey, 'the access token names no key and the issuer has several')
    return this.keys.refetchForUnknownKid(kid).then(() => {
      const fetched = this.keys.remoteKey(kid, alg)
      if (fetched === undefined) throw invalidToken(ErrorCode.tokenUnknownKey, 'the access token was signed with an unknown key')
      return this.#verifyWith(fetched, alg, token, nowMs, accessTyped)
    })
  }

  #verifyWith (key: RemoteKey, alg: string, token: string, nowMs: number, accessTyped: boolean): IssuerVerdict {
    let verifiers = this.#verifiers.get(key)
    if (verifiers === undefined) {
      verifiers = new Map()
      this.#verifiers.set(key, verifiers)
    }
    let verify = verifiers.get(alg)
    if (verify === undefined) {
      verify = createVerifier({
        key: key.pem,
        algorithms: [alg as 'RS256'],
        allowedIss: this.#config.issuer,
        allowedAud: [...this.#config.audiences],
        // fast-jwt checks allowedAud only when `aud` is present: without it listed here a
        // token with no `aud` at all passed (test/e2e/issuers-refuse.test.ts, "no aud")
        requiredClaims: [...new Set(['exp', 'iss', 'aud', ...this.#config.requiredClaims])],
        ignoreExpiration: true, // checked by the caller with our clock
        ignoreNotBefore: true,
        cache: false,
      }) as Verify
      verifiers.set(alg, verify)
    }
    let claims: Record<string, unknown>
    try {
      claims = verify(token)
    } catch (err) {
      throw translateJwtError(err)
    }
    if (!accessTyped) refuseOtherTokenKinds(claims)
    return this.#checkClaims(claims, key.handle, nowMs)
  }

  #checkClaims (claims: Record<string, unknown>, handle: KeyHandle, nowMs: number): IssuerVerdict {
    const { sub, jti, iat, exp, nbf } = claims
    if (sub !== undefined && (typeof sub !== 'string' || sub === '')) throw badClaim('sub')
    if (jti !== undefined && (typeof jti !== 'string' || jti === '')) throw badClaim('jti')
    if (!isNumericDate(exp)) throw badClaim('exp')
    if (iat !== undefined && !isNumericDate(iat)) throw badClaim('iat')
    if (nbf !== undefined && !isNumericDate(nbf)) throw badClaim('nbf')
    if (typeof iat === 'number' && iat * 1000 > nowMs + this.#skewMs) {
      throw invalidToken(ErrorCode.tokenIssuedInFuture, 'the access token was issued in the future')
    }
    const start = typeof iat === 'number' ? iat : typeof nbf === 'number' ? nbf : Math.floor(nowMs / 1000)
    if (exp - start > this.#config.maxTokenLifetimeSec) {
      throw invalidToken(ErrorCode.tokenLifetimeTooLong, 'the access token lives longer than this gateway accepts')
    }
    return {
      issuer: this.name,
      claims,
      sub: typeof sub === 'string' ? sub : undefined,
      jti: typeof jti === 'string' ? jti : undefined,
      scopes: this.#scopes(claims),
      expMs: exp * 1000,
      notBeforeMs: typeof nbf === 'number' ? nbf * 1000 - this.#skewMs : 0,
      skewMs: this.#skewMs,
      key: handle,
    }
  }

  /** scopes from a space-separated string (`scope`), an array (`scp`, Keycloak roles), or nothing (tokens/scopes.ts) */
  #scopes (claims: Record<string, unknown>): ReadonlySet<string> {
    const scopes = scopeSet(claimAt(claims, this.#config.scopeClaim), true)
    if (scopes === undefined) throw badClaim(this.#config.scopeClaim.join('.'))
    return scopes
  }
}

/**
 * A token whose header says only `JWT` (accepted with `typ: [JWT]`, as Keycloak's and Entra's
 * access tokens need) may be any JWT the provider signs: an ID token, a back-channel logout
 * token, a refresh token — for the same audience, when the API's audience is also a client id
 * users log in with. What an access token never carries gives the others away (fix-idp-id-token-as-access-token):
 * - `at_hash`, `c_hash`, `s_hash`: the hashes an ID token binds to what came with it (OIDC Core
 *   §3.1.3.6, §3.3.2.11; FAPI) — an access token cannot carry a hash of itself;
 * - `events`: a logout token (OIDC Back-Channel Logout §2.4), a security event token (RFC 8417);
 * - a payload `typ` other than `Bearer`: Keycloak marks every token it signs (`Bearer`, `ID`,
 *   `Logout`, `Refresh`, `Offline`); other providers set none.
 * `nonce` is no sign: older Keycloak puts it in access tokens too.
 */
function refuseOtherTokenKinds (claims: Record<string, unknown>): void {
  const typ = claims.typ
  if (claims.at_hash !== undefined || claims.c_hash !== undefined || claims.s_hash !== undefined ||
    claims.events !== undefined || (typ !== undefined && (typeof typ !== 'string' || typ.toLowerCase() !== 'bearer'))) {
    throw invalidToken(ErrorCode.tokenBadType, 'the token is not an access token of an accepted type')
  }
}

/** `typ` compares case-insensitively, with an `application/` prefix optional (RFC 7515 §4.1.9) */
function normalizeTyp (typ: string): string {
  const t = typ.toLowerCase()
  return t.startsWith('application/') ? t.slice(12) : t
}
