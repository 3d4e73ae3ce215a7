import { randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import type { KeySet } from './keys.js'
import type { VerifiedToken } from './verified-token.js'

/** the `typ` of an assertion: never mistaken for an access token (at+jwt) by the gateway or an upstream */
export const ASSERTION_TYP = 'portcullis-assertion+jwt'

// claims of the presented token that describe that token, not its subject
const TOKEN_CLAIMS = new Set(['iss', 'aud', 'exp', 'nbf', 'iat', 'jti', 'typ', 'cnf', 'client_id', 'azp', 'scope', 'scp'])
// an assertion is re-signed once less than this share of its lifetime is left, so an
// upstream never receives one about to expire in flight
const RENEW_AT_REMAINING = 0.2

/**
 * Identity out, verifiable (DESIGN: "Identity out"): a short-lived JWT the gateway signs for
 * a route's upstream — `aud` = that upstream, `sub`, `scope` (space-separated, whatever claim
 * the issuer kept scopes in), `token_iss` (who issued the token the gateway verified), and
 * the token's other claims. Signed with the gateway's signing key, so its public half is in
 * /.well-known/jwks.json; `typ` portcullis-assertion+jwt.
 *
 * Signed once per token and audience and reused until it nears its end — never a signature
 * per request: the verify cache hands the same VerifiedToken object to every request with
 * that token, and the signatures hang off it in a WeakMap (they go when it goes).
 */
export class AssertionSigner {
  readonly #sign: (payload: Record<string, unknown>) => string
  readonly #issuer: string
  readonly #lifetimeSec: number
  readonly #clock: () => number
  readonly #signed = new WeakMap<VerifiedToken, Map<string, { jwt: string, renewAtMs: number }>>()
  /** signatures made, for the metrics (and the test that they are reused) */
  signatures = 0

  constructor (keys: KeySet, issuer: string, lifetimeSec: number, clock: () => number) {
    this.#sign = createSigner({
      key: keys.signing.key,
      algorithm: keys.algorithm,
      kid: keys.signing.kid,
      header: { alg: keys.algorithm, typ: ASSERTION_TYP },
    })
    this.#issuer = issuer
    this.#lifetimeSec = lifetimeSec
    this.#clock = clock
  }

  /** the assertion about `token` for `audience`; reused while it has life left */
  assertion (token: VerifiedToken, audience: string): string {
    const nowMs = this.#clock()
    let byAudience = this.#signed.get(token)
    const cached = byAudience?.get(audience)
    if (cached !== undefined && nowMs < cached.renewAtMs) return cached.jwt
    const iat = Math.floor(nowMs / 1000)
    // never outlives the token it vouches for
    const exp = Math.min(iat + this.#lifetimeSec, Math.floor(token.expMs / 1000))
    const payload: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(token.claims)) if (!TOKEN_CLAIMS.has(k)) payload[k] = v
    Object.assign(payload, {
      iss: this.#issuer,
      aud: audience,
      sub: token.sub,
      scope: [...token.scopes].join(' '),
      token_iss: token.claims.iss,
      iat,
      exp,
      jti: randomUUID(),
    })
    const jwt = this.#sign(payload)
    this.signatures++
    if (byAudience === undefined) {
      byAudience = new Map()
      this.#signed.set(token, byAudience)
    }
    byAudience.set(audience, { jwt, renewAtMs: (exp - (exp - iat) * RENEW_AT_REMAINING) * 1000 })
    return jwt
  }
}
