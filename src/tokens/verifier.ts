import { ErrorCode, invalidToken } from '../errors.js'
import { SELF_ISSUER, type GatewayConfig } from '../config/types.js'
import { forwardedClaimsCheck, identityHeaders } from './identity.js'
import { badClaim } from './jwt-errors.js'
import { hasControlCharacter } from '../text.js'
import { decodeSegment, splitToken } from './jwt-parts.js'
import type { ExternalIssuer } from './external-issuer.js'
import { SelfIssuer } from './self-issuer.js'
import type { KeySet } from './keys.js'
import { VerifiedCache } from './verify-cache.js'
import { revocationJtiKey, type IssuerVerdict, type VerifiedToken } from './verified-token.js'

/**
 * The verify stage: a bearer token → a VerifiedToken, for the gateway's own tokens and every
 * configured identity provider alike. Built once per configuration.
 *
 * 1. the verify cache (by the token's exact text) — a hit still checks time and that its key
 *    was not withdrawn; the caller checks revocation on every request;
 * 2. size cap, three segments;
 * 3. the issuer, chosen by the exact `iss` of the (not yet verified) payload among the
 *    configured ones — never a URL from the token. With only the gateway's own issuer
 *    configured, the payload is not parsed here at all;
 * 4. that issuer's verification (signature, algorithm, typ, claims);
 * 5. time against the injected clock; the identity headers, once per token.
 */
export class TokenVerifier {
  readonly #self: SelfIssuer
  readonly #external: ReadonlyMap<string, ExternalIssuer>
  readonly #identity: GatewayConfig['identity']
  readonly #checkForwarded: (claims: Readonly<Record<string, unknown>>) => void
  readonly #maxTokenBytes: number
  readonly #cache: VerifiedCache | undefined
  /** verification outcomes for the metrics: hits, misses (verifications), failures */
  readonly counts = { hits: 0, misses: 0, failures: 0 }

  constructor (self: SelfIssuer, external: readonly ExternalIssuer[], config: GatewayConfig) {
    this.#self = self
    this.#external = new Map(external.map(i => [i.issuer, i]))
    this.#identity = config.identity
    this.#checkForwarded = forwardedClaimsCheck(config.identity)
    this.#maxTokenBytes = config.tokens.maxTokenBytes
    this.#cache = config.tokens.verifyCacheSize > 0 ? new VerifiedCache(config.tokens.verifyCacheSize) : undefined
  }

  /** a verifier of the gateway's own tokens only (tests, benchmarks) */
  static selfOnly (keys: KeySet, config: GatewayConfig): TokenVerifier {
    return new TokenVerifier(new SelfIssuer(keys, config.tokens), [], config)
  }

  /** Throws a GatewayError (401 invalid_token) for every way a token can be wrong. */
  verify (token: string, nowMs: number): VerifiedToken | Promise<VerifiedToken> {
    const cached = this.#cache?.get(token)
    if (cached !== undefined && (cached.key === undefined || cached.key.alive)) {
      checkTime(cached, nowMs)
      this.counts.hits++
      return cached
    }
    this.counts.misses++
    try {
      if (token.length > this.#maxTokenBytes) throw invalidToken(ErrorCode.tokenTooLarge, 'the access token is too large')
      const [headerSegment, payloadSegment] = splitToken(token)
      let verdict: IssuerVerdict | Promise<IssuerVerdict>
      if (this.#external.size === 0) {
        verdict = this.#self.verify(token, headerSegment, payloadSegment, nowMs)
      } else {
        const iss = decodeSegment(payloadSegment).iss
        const issuer = typeof iss === 'string' ? this.#external.get(iss) : undefined
        if (issuer !== undefined) verdict = issuer.verify(token, decodeSegment(headerSegment), nowMs)
        else if (iss === this.#self.issuer) verdict = this.#self.verify(token, headerSegment, payloadSegment, nowMs)
        else throw invalidToken(ErrorCode.tokenBadIssuer, 'the access token was issued by an issuer this gateway does not trust')
      }
      if (verdict instanceof Promise) {
        return verdict.then(v => this.#accept(token, v, nowMs), (err: unknown) => { this.counts.failures++; throw err })
      }
      return this.#accept(token, verdict, nowMs)
    } catch (err) {
      this.counts.failures++
      throw err
    }
  }

  get cacheSize (): number { return this.#cache?.size ?? 0 }

  /**
   * What a token may carry whoever signed it, checked once per verification (never on a
   * cache hit) and by `portcullis explain` on claims it decodes or is given:
   * - identifiers the gateway forwards (sub) or stores when it revokes (jti, sid): a control
   *   character (NUL: PostgreSQL refuses it in text) would make the token unrevocable or its
   *   logout a 500;
   * - claims that would reach the upstream as another value (lone surrogates, integers past
   *   2^53): tokens/identity.ts forwardedClaimsCheck.
   */
  checkCarried (sub: string | undefined, jti: string | undefined, claims: Readonly<Record<string, unknown>>): void {
    if ((sub !== undefined && hasControlCharacter(sub)) || (jti !== undefined && hasControlCharacter(jti)) ||
      (typeof claims.sid === 'string' && hasControlCharacter(claims.sid))) throw badClaim('sub, jti or sid')
    this.#checkForwarded(claims)
  }

  #accept (token: string, verdict: IssuerVerdict, nowMs: number): VerifiedToken {
    this.checkCarried(verdict.sub, verdict.jti, verdict.claims)
    // every field written out: one object shape for every issuer (a spread of the verdict
    // cost ~1.5 µs per verification, bench/micro-hotpath.ts)
    const verified: VerifiedToken = {
      issuer: verdict.issuer,
      claims: verdict.claims,
      sub: verdict.sub,
      jti: verdict.jti,
      scopes: verdict.scopes,
      expMs: verdict.expMs,
      notBeforeMs: verdict.notBeforeMs,
      skewMs: verdict.skewMs,
      key: verdict.key,
      identity: identityHeaders(verdict.claims, this.#identity, verdict.scopes),
      revocationJti: revocationJtiKey(verdict.issuer === SELF_ISSUER, verdict.claims.iss, verdict.jti, token),
      text: token,
    }
    checkTime(verified, nowMs)
    this.#cache?.admit(token, verified)
    return verified
  }
}

/** expiry and not-before against the clock, with the issuer's skew (cache hits too) */
export function checkTime (t: VerifiedToken, nowMs: number): void {
  if (nowMs >= t.expMs + t.skewMs) throw invalidToken(ErrorCode.tokenExpired, 'the access token expired')
  if (nowMs < t.notBeforeMs) throw invalidToken(ErrorCode.tokenNotYetValid, 'the access token is not valid yet')
}
