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

export class TokenPools {
  readonly #dir: string
  readonly #keys: Record<Algorithm, KeyMaterial>
  readonly #files = new Map<string, PoolFile>()
  readonly coldCount: number
  #serial = 0
  /** seconds spent minting, for the report */
  mintSec = 0

  constructor (dir: string, keys: Record<Algorithm, KeyMaterial>, coldCount: number) {
    this.#dir = dir
    this.#keys = keys
    this.coldCount = coldCount
  }

  get (alg: Algorithm, kind: 'pool' | 'cold'): PoolFile {
    const key = `${alg}-${kind}`
    const now = Math.floor(Date.now() / 1000)
    const have = this.#files.get(key)
    if (have !== undefined && now - have.mintedAtSec < TOKEN_TTL_SEC - REMINT_MARGIN_SEC) return have
    const t0 = performance.now()
    const tokens = mintTokens(this.#keys[alg], kind === 'pool' ? POOL_SIZE : this.coldCount, { tag: `${kind}${this.#serial++}`, nowSec: now })
    const file = join(this.#dir, `${key}.tokens`)
    writeTokenFile(file, tokens)
    this.mintSec += (performance.now() - t0) / 1000
    const made = { file, mintedAtSec: now }
    this.#files.set(key, made)
    return made
  }

  /** a fresh token for the pre-run checks, with its sub */
  checkToken (alg: Algorithm): { token: string, sub: string } {
    const tag = `check${this.#serial++}`
    const [token] = mintTokens(this.#keys[alg], 1, { tag })
    return { token: token as string, sub: `user-${tag}-0` }
  }

  /** a valid token whose jti is `jti` (the denylist check) */
  tokenWithJti (alg: Algorithm, jti: string): string {
    const [token] = mintTokens(this.#keys[alg], 1, { tag: 'revoked', jti })
    return token as string
  }
}
