/**
 * Token files for wrk, per algorithm:
 * - `pool`: 10,000 distinct valid tokens (distinct sub and jti), cycled — real clients reuse
 *   a token for minutes, so a gateway that caches verified tokens is measured as it runs;
 * - `cold`: --cold-tokens distinct tokens, each sent once: every request is a verification
 *   miss. Each run starts a fresh gateway, so one file serves every cold run while valid.
 * Tokens live 10 minutes: a file is minted again once it has less than REMINT_MARGIN_SEC left.
 */
import { join } from 'node:path'
import { mintTokens, writeTokenFile, TOKEN_TTL_SEC, type Algorithm, type KeyMaterial } from './tokens.js'

export const POOL_SIZE = 10_000
/** a run (start, checks, warm-up, measure) must end well before its tokens expire */
const REMINT_MARGIN_SEC = 180

interface PoolFile { file: string, mintedAtSec: number }

/** another issuer's tokens (bench/lib/idp.ts): minted with its key, iss, aud and kid */
export interface ExternalSource { keys: KeyMaterial, issuer: string, audience: string, kid: string }

export class TokenPools {
  readonly #dir: string
  readonly #keys: Record<Algorithm, KeyMaterial>
  readonly #files = new Map<string, PoolFile>()
  readonly coldCount: number
  /** set by the runner once the stand-in IdP listens */
  external: ExternalSource | undefined
  #serial = 0
  /** seconds spent minting, for the report */
  mintSec = 0

  constructor (dir: string, keys: Record<Algorithm, KeyMaterial>, coldCount: number) {
    this.#dir = dir
    this.#keys = keys
    this.coldCount = coldCount
  }

  /** `external`: the stand-in IdP's tokens (its own RS256 key), not the gateway's */
  get (alg: Algorithm, kind: 'pool' | 'cold', external = false): PoolFile {
    const key = `${external ? 'external-' : ''}${alg}-${kind}`
    const now = Math.floor(Date.now() / 1000)
    const have = this.#files.get(key)
    if (have !== undefined && now - have.mintedAtSec < TOKEN_TTL_SEC - REMINT_MARGIN_SEC) return have
    const t0 = performance.now()
    const count = kind === 'pool' ? POOL_SIZE : this.coldCount
    const tag = `${kind}${this.#serial++}`
    const tokens = external
      ? mintTokens(this.#source().keys, count, { tag, nowSec: now, ...this.#sourceClaims() })
      : mintTokens(this.#keys[alg], count, { tag, nowSec: now })
    const file = join(this.#dir, `${key}.tokens`)
    writeTokenFile(file, tokens)
    this.mintSec += (performance.now() - t0) / 1000
    const made = { file, mintedAtSec: now }
    this.#files.set(key, made)
    return made
  }

  /** a fresh token for the pre-run checks, with its sub */
  checkToken (alg: Algorithm, external = false): { token: string, sub: string } {
    const tag = `check${this.#serial++}`
    const [token] = external ? mintTokens(this.#source().keys, 1, { tag, ...this.#sourceClaims() }) : mintTokens(this.#keys[alg], 1, { tag })
    return { token: token as string, sub: `user-${tag}-0` }
  }

  #source (): ExternalSource {
    if (this.external === undefined) throw new Error('no stand-in IdP: the external configurations need one')
    return this.external
  }

  #sourceClaims (): { issuer: string, audience: string, kid: string } {
    const s = this.#source()
    return { issuer: s.issuer, audience: s.audience, kid: s.kid }
  }

  /** a valid token whose jti is `jti` (the denylist check) */
  tokenWithJti (alg: Algorithm, jti: string): string {
    const [token] = mintTokens(this.#keys[alg], 1, { tag: 'revoked', jti })
    return token as string
  }
}
