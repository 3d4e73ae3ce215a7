import type { VerifiedToken } from './verified-token.js'

// What an entry keeps alive is estimated from unit costs measured in V8 (Node 20, 64-bit,
// heapUsed over 2,000 parsed payloads): `{}` and `[]` as array elements 64 and 56 B, an
// 8-character string in an array 32 B, a property with a key of its own 73 B, a scope in a
// Set 44 B. Against whole verified tokens measured the same way it comes out over rather than
// under: typical tokens 1.3–1.7×, 8 KB of string claims 1.06×, of small objects, nested arrays
// or numbers 1.5–3×; only properties with keys of their own come out under (0.8×, ~85 B each).
// A string counts one byte a character, so two-byte strings count half.
/** an object, array, Set or Map: its header and its backing store */
const CONTAINER_BYTES = 64
/** a value's slot in its container, or a string's header; a property or a Set or Map member counts one more (its key, its hash-table entry) */
const SLOT_BYTES = 32
/** the VerifiedToken itself (a dozen fields), its Map entry and its ring slot */
const ENTRY_BYTES = 256

/**
 * The heaviest entry the verify cache (and the assertion cache, assertion.ts) keeps. A token
 * at the default maxTokenBytes (8 KiB) whose claims are strings and lists of strings weighs
 * about twice its length with its identity headers; one whose payload parses into many small
 * objects weighs 15 times it (~1,900 `{}` in 5.7 KB of JSON: 125 KB) — 20,000 of those held
 * 2.5 GB (fix-verify-cache-unbounded-bytes). A heavier token is verified on each use instead,
 * which is what every new token costs already; so is its assertion signed.
 */
export const MAX_ENTRY_BYTES = 32 * 1024

/**
 * The verify cache's estimated bytes for each token verifyCacheSize counts (60 MiB at the
 * default 20,000): the count alone let every entry hold what a token's payload parses into,
 * and an identity provider that lets a user shape a claim (or a hostile one) makes each one
 * as heavy as it likes — 20,000 tokens of 8 KB held 300 MB, of small objects 2.5 GB
 * (fix-verify-cache-unbounded-bytes). A typical token weighs less (the gateway's own ~2.5 KiB,
 * measured), so the count still decides; an identity provider's (Keycloak's, Entra ID's:
 * 1.2–2.2 KB, 20–25 claims) weighs 6–7 KiB and fills it at about half the count. Scaled with
 * the count rather than fixed, so raising verifyCacheSize still buys room for such tokens.
 * With the assertion cache's (assertion.ts), the two hold at most 90 MiB by default.
 */
export const VERIFY_BUDGET_BYTES_PER_TOKEN = 3 * 1024

/**
 * Verified tokens by their exact text (signature included, so nothing forged can hit),
 * bounded by count and by estimated bytes; the oldest insertion leaves first. An entry past
 * its exp is refused on every read (the time check runs on hits too) until newer entries push
 * it out.
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
 * Entries are written at `#next` and leave from `#oldest`: a full ring has both on the same
 * slot (one eviction per admission, as before the budget); a heavy admission evicts several
 * and leaves the slots between the two empty, for the next admissions to fill. Each entry's
 * weight is estimated once, when it is admitted, and kept beside its key: a hit costs the Map
 * lookup it always did.
 */
export class VerifiedCache {
  readonly #map = new Map<string, VerifiedToken>()
  readonly #ring: Array<string | undefined>
  /** the estimated bytes of the entry in the same ring slot */
  readonly #weights: Uint32Array
  #next = 0
  #oldest = 0
  #bytes = 0
  readonly #budgetBytes: number
  readonly #seen: Uint32Array
  readonly #seenMask: number
  #seenCount = 0

  constructor (max: number) {
    this.#ring = new Array<string | undefined>(max).fill(undefined)
    this.#weights = new Uint32Array(max)
    this.#budgetBytes = Math.max(MAX_ENTRY_BYTES, max * VERIFY_BUDGET_BYTES_PER_TOKEN)
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
    // `token` is value.text; sub and jti are strings of the claims
    const bytes = ENTRY_BYTES + estimateBytes([token, value.claims, value.scopes, value.identity, value.revocationJti], MAX_ENTRY_BYTES)
    if (bytes > MAX_ENTRY_BYTES) return
    while (this.#ring[this.#next] !== undefined || this.#bytes + bytes > this.#budgetBytes) this.#evictOldest()
    this.#ring[this.#next] = token
    this.#weights[this.#next] = bytes
    this.#next = this.#next + 1 === this.#ring.length ? 0 : this.#next + 1
    this.#bytes += bytes
    this.#map.set(token, value)
  }

  get size (): number { return this.#map.size }

  /** the estimated bytes the cached tokens keep alive (at most verifyCacheSize × VERIFY_BUDGET_BYTES_PER_TOKEN) */
  get bytes (): number { return this.#bytes }

  #evictOldest (): void {
    // a token verified again while cached (its key withdrawn, then published again) holds
    // two slots: the older one's eviction takes the entry early, the newer one's finds none
    this.#map.delete(this.#ring[this.#oldest] as string)
    this.#bytes -= this.#weights[this.#oldest] as number
    this.#ring[this.#oldest] = undefined
    this.#oldest = this.#oldest + 1 === this.#ring.length ? 0 : this.#oldest + 1
  }
}

/**
 * The heap `value` keeps alive, estimated: strings by their length, every other node at the
 * fixed costs above. Walks arrays, plain objects (claims as JSON.parse made them), Sets and
 * Maps, without recursion (a payload of nested arrays is thousands deep), and stops once the
 * total passes `capBytes`: a payload that parses into 100,000 nodes costs as many steps as
 * one at the cap. Run when an entry is admitted, never on a hit. Shared by the assertion cache.
 */
export function estimateBytes (value: unknown, capBytes: number): number {
  let bytes = SLOT_BYTES
  const pending: unknown[] = [value]
  while (pending.length > 0) {
    const v = pending.pop()
    if (typeof v === 'string') bytes += v.length
    else if (typeof v === 'object' && v !== null) {
      bytes += CONTAINER_BYTES
      if (Array.isArray(v)) {
        for (let i = 0; i < v.length && bytes <= capBytes; i++) { bytes += SLOT_BYTES; pending.push(v[i]) }
      } else if (v instanceof Set) {
        for (const member of v) { bytes += 2 * SLOT_BYTES; pending.push(member); if (bytes > capBytes) break }
      } else if (v instanceof Map) {
        for (const [k, member] of v) {
          bytes += 2 * SLOT_BYTES + (typeof k === 'string' ? k.length : 0)
          pending.push(member)
          if (bytes > capBytes) break
        }
      } else {
        for (const k in v) {
          bytes += 2 * SLOT_BYTES + k.length
          pending.push((v as Record<string, unknown>)[k])
          if (bytes > capBytes) break
        }
      }
    }
    if (bytes > capBytes) return bytes
  }
  return bytes
}

/** FNV-1a over the last 16 characters: the end of the signature, random in every real token */
function fingerprint (token: string): number {
  let h = 0x811c9dc5
  for (let i = Math.max(0, token.length - 16); i < token.length; i++) {
    h = Math.imul(h ^ token.charCodeAt(i), 0x01000193)
  }
  return h >>> 0
}
