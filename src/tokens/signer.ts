import { randomUUID } from 'node:crypto'
import { createSigner } from 'fast-jwt'
import type { KeySet } from './keys.js'

/** Claims the gateway sets itself; extra user claims can never override them. */
export const RESERVED_CLAIMS: ReadonlySet<string> = new Set(['iss', 'aud', 'sub', 'exp', 'nbf', 'iat', 'jti', 'scope', 'sid', 'client_id'])

export interface AccessTokenInput {
  sub: string
  scope: readonly string[]
  /** the session the token belongs to (revocable as a whole) */
  sid?: string
  /** extra claims (roles, tenant, …) */
  claims?: Readonly<Record<string, unknown>>
}

export interface SignedAccessToken {
  token: string
  jti: string
  /** epoch seconds */
  iat: number
  exp: number
  expiresInSec: number
}

export interface SignerOptions {
  issuer: string
  audience: string
  accessTokenTtlSec: number
  clock?: () => number
}

/**
 * Issues access tokens (RFC 9068 profile: `typ: at+jwt`, `iss`, `aud`, `sub`, `exp`,
 * `iat`, `jti`, space-separated `scope`). The one module that signs.
 */
export class TokenSigner {
  readonly #sign: (payload: Record<string, unknown>) => string
  readonly #options: SignerOptions
  readonly #clock: () => number

  constructor (keys: KeySet, options: SignerOptions) {
    this.#options = options
    this.#clock = options.clock ?? Date.now
    this.#sign = createSigner({
      key: keys.signing.key,
      algorithm: keys.algorithm,
      kid: keys.signing.kid,
      header: { alg: keys.algorithm, typ: 'at+jwt' }, // RFC 9068 §2.1
    })
  }

  sign (input: AccessTokenInput): SignedAccessToken {
    const iat = Math.floor(this.#clock() / 1000)
    const exp = iat + this.#options.accessTokenTtlSec
    const jti = randomUUID()
    const payload: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(input.claims ?? {})) if (!RESERVED_CLAIMS.has(k)) payload[k] = v
    Object.assign(payload, { // iat and exp from our clock: fast-jwt keeps a given iat
      iss: this.#options.issuer,
      aud: this.#options.audience,
      sub: input.sub,
      scope: input.scope.join(' '),
      iat,
      exp,
      jti,
    })
    if (input.sid !== undefined) payload.sid = input.sid
    return { token: this.#sign(payload), jti, iat, exp, expiresInSec: exp - iat }
  }
}
