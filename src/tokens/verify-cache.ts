import type { VerifiedToken } from './verified-token.js'

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
export class VerifiedCache {
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
