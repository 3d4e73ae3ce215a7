import { randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import { ErrorCode, invalidToken, type GatewayError } from '../errors.js'
import type { KeySet } from './keys.js'
import type { VerifiedToken } from './verified-token.js'
import { estimateBytes, MAX_ENTRY_BYTES } from './verify-cache.js'

/** the `typ` of an assertion: never mistaken for an access token (at+jwt) by the gateway or an upstream */
export const ASSERTION_TYP = 'portcullis-assertion+jwt'

/** the claim that lists the token claims left out of an assertion to keep it within its budget */
export const OMITTED_CLAIMS = 'omitted_claims'

// claims of the presented token that describe that token, not its subject (and our own
// marker, which a token must not be able to forge into the assertion)
const TOKEN_CLAIMS = new Set(['iss', 'aud', 'exp', 'nbf', 'iat', 'jti', 'typ', 'cnf', 'client_id', 'azp', 'scope', 'scp', OMITTED_CLAIMS])
// what every assertion carries, whatever its size
const CORE_CLAIMS = new Set(['iss', 'aud', 'sub', 'scope', 'token_iss', 'iat', 'exp', 'jti'])
// an assertion is re-signed once less than this share of its lifetime is left, so an
// upstream never receives one about to expire in flight
const RENEW_AT_REMAINING = 0.2
/**
 * The assertion cache's estimated bytes for each token maxTokens counts (30 MiB at the
 * default 20,000): an entry holds the token's text and an assertion per audience, each up to
 * ~8 KB, and the count alone let 20,000 of 8 KB tokens hold 300 MB more on a route with an
 * assertion (fix-verify-cache-unbounded-bytes). A typical entry (the gateway's own token and
 * one assertion) weighs ~1.5 KiB; an identity provider's 3–5 KiB. With the verify cache's
 * (verify-cache.ts), the two hold at most 90 MiB by default.
 */
const BUDGET_BYTES_PER_TOKEN = 1536

export interface AssertionLimits {
  /**
   * identity.maxHeaderBytes: the identity headers of a token and its assertion together stay
   * within it (a token with 500 groups must not make a request the upstream refuses). Over it,
   * the largest non-core claims are left out of the assertion and named in `omitted_claims`;
   * the core claims (iss aud sub scope token_iss iat exp jti) are always kept, so a token
   * whose core claims do not fit beside its identity headers gets no assertion: the request
   * is refused (tooLargeToForward). The caller deducts the assertion header's name. Default 8192.
   */
  maxBytes?: number | undefined
  /**
   * distinct tokens whose assertions are kept for reuse, and with BUDGET_BYTES_PER_TOKEN what
   * they may weigh together; the oldest leave first. Default 10,000.
   */
  maxTokens?: number | undefined
}

/** a signed assertion, or undefined: the token's core claims do not fit the budget (kept, so a retry signs nothing) */
interface Signed { jwt: string | undefined, renewAtMs: number }

/**
 * Identity out, verifiable (DESIGN: "Identity out"): a short-lived JWT the gateway signs for
 * a route's upstream — `aud` = that upstream, `sub`, `scope` (space-separated, whatever claim
 * the issuer kept scopes in), `token_iss` (who issued the token the gateway verified), and
 * the token's other claims. Signed with the gateway's signing key, so its public half is in
 * /.well-known/jwks.json; `typ` portcullis-assertion+jwt.
 *
 * Signed once per token and audience and reused until it nears its end — never a signature
 * per request. Reuse is keyed by the token's whole text (as the verify cache is), not by
 * the VerifiedToken object, and not by its signature alone, which a second issuer's key can
 * be made to verify over other claims (fix-assertion-keyed-by-signature): the
 * verify cache admits a token on its second use (and may be off), so the same token arrives
 * as two or more objects; keyed by object, every token was signed at least twice, and on
 * every request with the cache off (test/e2e/assertion-gateway.test.ts). The map is bounded
 * like the verify cache, by count and by estimated bytes: a ring of keys written at `#next`,
 * left from `#oldest`, the oldest insertion leaving first. An entry's weight is estimated when
 * it is signed into (never on a reuse), from what it holds, so it is not kept beside it.
 */
export class AssertionSigner {
  readonly #sign: (payload: Record<string, unknown>) => string
  readonly #issuer: string
  readonly #lifetimeSec: number
  readonly #clock: () => number
  readonly #maxBytes: number
  readonly #signed = new Map<string, Map<string, Signed>>()
  readonly #ring: Array<string | undefined>
  #next = 0
  #oldest = 0
  #bytes = 0
  readonly #budgetBytes: number
  /** signatures made, for the metrics (and the test that they are reused) */
  signatures = 0
  /** assertions that left claims out to stay within maxBytes */
  trimmed = 0

  constructor (keys: KeySet, issuer: string, lifetimeSec: number, clock: () => number, limits: AssertionLimits = {}) {
    this.#sign = createSigner({
      key: keys.signing.key,
      algorithm: keys.algorithm,
      kid: keys.signing.kid,
      header: { alg: keys.algorithm, typ: ASSERTION_TYP },
    })
    this.#issuer = issuer
    this.#lifetimeSec = lifetimeSec
    this.#clock = clock
    this.#maxBytes = limits.maxBytes ?? 8192
    this.#ring = new Array<string | undefined>(Math.max(1, limits.maxTokens ?? 10_000)).fill(undefined)
    this.#budgetBytes = Math.max(MAX_ENTRY_BYTES, this.#ring.length * BUDGET_BYTES_PER_TOKEN)
  }

  /** the assertion about `token` for `audience`; reused while it has life left */
  assertion (token: VerifiedToken, audience: string): string {
    const nowMs = this.#clock()
    const byAudience = this.#signed.get(token.text)
    const cached = byAudience?.get(audience)
    if (cached !== undefined && nowMs < cached.renewAtMs) {
      if (cached.jwt === undefined) throw tooLargeToForward()
      return cached.jwt
    }
    const iat = Math.floor(nowMs / 1000)
    // never outlives the gateway's acceptance of the token it vouches for — which runs until
    // `exp` plus the issuer's skew (an assertion for a token in that window was born expired,
    // refused upstream and signed again on every request), rounded up to a whole second
    const exp = Math.min(iat + this.#lifetimeSec, Math.ceil((token.expMs + token.skewMs) / 1000))
    const payload: Record<string, unknown> = {}
    // defineProperty: a claim named "__proto__" (JSON.parse makes it an own property) is copied
    // as a claim, never assigned as the payload's prototype
    for (const [k, v] of Object.entries(token.claims)) {
      if (!TOKEN_CLAIMS.has(k)) Object.defineProperty(payload, k, { value: v, enumerable: true, writable: true, configurable: true })
    }
    // `sub` came with the claims above; a token without one (an identity provider's whose
    // requiredClaims leave it out) gives an assertion without one, which the upstream kit
    // refuses — never `sub: ""`, one subject shared by every such token (fix-subless-token-one-identity)
    Object.assign(payload, {
      iss: this.#issuer,
      aud: audience,
      scope: [...token.scopes].join(' '),
      token_iss: token.claims.iss,
      iat,
      exp,
      jti: randomUUID(),
    })
    let identityBytes = 0
    for (const [name, value] of token.identity) identityBytes += name.length + value.length
    const jwt = this.#signWithin(payload, this.#maxBytes - identityBytes)
    this.#keep(token.text, byAudience, audience, { jwt, renewAtMs: (exp - (exp - iat) * RENEW_AT_REMAINING) * 1000 })
    if (jwt === undefined) throw tooLargeToForward()
    return jwt
  }

  /** how many tokens have assertions kept for reuse */
  get size (): number { return this.#signed.size }

  /** the estimated bytes the kept assertions and their tokens' texts keep alive */
  get bytes (): number { return this.#bytes }

  /**
   * Keeps `signed` for reuse. An entry heavier than MAX_ENTRY_BYTES is not kept (a token of
   * 40 KB, or one whose assertions for many audiences add up): its assertion is signed again
   * on each use, as a new token's is. Room is made by evicting the oldest entries, which may be
   * this token's own when it is the oldest; it then comes back as a new one on its next use.
   */
  #keep (token: string, byAudience: Map<string, Signed> | undefined, audience: string, signed: Signed): void {
    if (byAudience === undefined) {
      const entry = new Map([[audience, signed]])
      const bytes = weigh(token, entry)
      if (bytes > MAX_ENTRY_BYTES) return
      while (this.#ring[this.#next] !== undefined || this.#bytes + bytes > this.#budgetBytes) this.#evictOldest()
      this.#ring[this.#next] = token
      this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1
      this.#bytes += bytes
      this.#signed.set(token, entry)
      return
    }
    // another audience, or a renewal (whose stale assertion this replaces)
    const before = weigh(token, byAudience)
    byAudience.set(audience, signed)
    let after = weigh(token, byAudience)
    if (after > MAX_ENTRY_BYTES) {
      byAudience.delete(audience)
      after = weigh(token, byAudience)
    }
    this.#bytes += after - before
    while (this.#bytes > this.#budgetBytes) this.#evictOldest()
  }

  #evictOldest (): void {
    const token = this.#ring[this.#oldest] as string
    this.#bytes -= weigh(token, this.#signed.get(token) as Map<string, Signed>)
    this.#signed.delete(token)
    this.#ring[this.#oldest] = undefined
    this.#oldest = this.#oldest + 1 === this.#ring.length ? 0 : this.#oldest + 1
  }

  /**
   * Signs, and when the result is over `budget` bytes, signs again without the largest
   * optional claims, naming them in `omitted_claims` (signed: the upstream knows the list is
   * incomplete rather than reading a partial one as whole). The core claims always stay;
   * undefined when they alone are over the budget (a 5,000-character sub, 240 scopes): such
   * an assertion went out whole, and the identity headers with it past identity.maxHeaderBytes
   * (fix-identity-over-budget).
   */
  #signWithin (payload: Record<string, unknown>, budget: number): string | undefined {
    let jwt = this.#sign(payload)
    this.signatures++
    if (jwt.length <= budget) return jwt
    // base64url: 4 characters per 3 bytes of JSON
    const encoded = (bytes: number): number => Math.ceil(bytes * 4 / 3)
    // largest first, each with its share of the encoded payload ("name":value,)
    const optional = Object.keys(payload)
      .filter(k => !CORE_CLAIMS.has(k))
      .map(k => [k, encoded(Buffer.byteLength(JSON.stringify(payload[k])) + Buffer.byteLength(k) + 4)] as const)
      .sort((a, b) => b[1] - a[1])
    const omitted: string[] = []
    let i = 0
    while (jwt.length > budget && i < optional.length) {
      // drop until the estimate fits (the list of omitted names grows the payload a little),
      // then sign and measure; a second round only when the estimate was short
      let estimate = jwt.length + (omitted.length === 0 ? encoded(OMITTED_CLAIMS.length + 5) : 0)
      while (estimate > budget && i < optional.length) {
        const [k, size] = optional[i++] as readonly [string, number]
        delete payload[k]
        omitted.push(k)
        estimate -= size - encoded(Buffer.byteLength(k) + 3)
      }
      payload[OMITTED_CLAIMS] = omitted
      jwt = this.#sign(payload)
      this.signatures++
    }
    if (jwt.length > budget) return undefined
    this.trimmed++
    return jwt
  }
}

/** an assertion cache entry's estimated bytes: the token's text and its assertions by audience */
function weigh (token: string, byAudience: ReadonlyMap<string, Signed>): number {
  return estimateBytes([token, byAudience], MAX_ENTRY_BYTES)
}

/**
 * 401 token_invalid_claim, like every claim that cannot reach the upstream as signed: the
 * token's own claims (sub, scopes) are too large to forward within identity.maxHeaderBytes
 * beside its identity headers. Not token_too_large, which names tokens.maxTokenBytes.
 */
function tooLargeToForward (): GatewayError {
  return invalidToken(ErrorCode.tokenBadClaim, "the access token's subject and scopes are too large to forward to this route")
}
