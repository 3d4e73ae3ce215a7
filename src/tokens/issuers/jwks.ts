import { createHash, type JsonWebKey, type KeyObject } from 'node:crypto'
import { checkJwkMembers, checkKeyForAlgorithm, KeyRejection, publicKeyFromJwk, type RemoteAlgorithm } from './algorithms.js'
import { IssuerKeysError, IssuerKeysErrorCode } from './errors.js'
import type { KeyHandle } from '../verified-token.js'

/** One usable key of an issuer's set. Unchanged keys keep the same object across refreshes. */
export interface RemoteKey {
  /** undefined when the JWK has no `kid` (then it serves only tokens without one) */
  readonly kid: string | undefined
  /** the pinned algorithms this key verifies: its JWK `alg`, or every pinned one its type fits */
  readonly algorithms: readonly RemoteAlgorithm[]
  readonly key: KeyObject
  /**
   * The same key as SPKI PEM, exported once: fast-jwt 6 takes only PEM strings or buffers
   * (`createVerifier({ key: KeyObject })` throws "The public key must be a string or a buffer").
   */
  readonly pem: string
  /** RFC 7638 JWK SHA-256 thumbprint, base64url: identifies the key material in logs */
  readonly thumbprint: string
  /**
   * Dies (alive = false) when the issuer stops publishing the key (RemoteKeySet): every token
   * it verified carries this handle, so a cached verification and an open WebSocket learn of
   * the withdrawal without a lookup
   */
  readonly handle: KeyHandle
}

export interface IgnoredKey {
  /** position in the document's `keys` array */
  index: number
  kid: string | undefined
  reason: KeyRejection | 'not_an_object' | 'invalid_kid' | 'duplicate_kid'
}

export interface ParsedJwks {
  keys: RemoteKey[]
  ignored: IgnoredKey[]
}

/**
 * Reads a JWKS document (RFC 7517 §5) into the keys usable for the pinned algorithms. One
 * bad key never spoils the set: it is left out and reported in `ignored`. The document is
 * refused only when it is not a set, has more than `maxKeys` entries (bounds the parse work)
 * or yields no usable key at all (more likely a broken IdP than a deliberate empty set: the
 * previous keys stay, see stale-if-error in remote-key-set.ts).
 */
export function parseJwks (doc: unknown, pinned: readonly RemoteAlgorithm[], maxKeys: number): ParsedJwks {
  if (typeof doc !== 'object' || doc === null || !Array.isArray((doc as { keys?: unknown }).keys)) {
    throw new IssuerKeysError(IssuerKeysErrorCode.invalidJwks, 'the JWKS is not a JSON object with a "keys" array')
  }
  const entries = (doc as { keys: unknown[] }).keys
  if (entries.length > maxKeys) {
    throw new IssuerKeysError(IssuerKeysErrorCode.tooManyKeys, `the JWKS has ${entries.length} keys, more than maxKeys (${maxKeys})`)
  }
  const keys: RemoteKey[] = []
  const ignored: IgnoredKey[] = []
  /** kid → algorithms already served under it */
  const seen = new Map<string | undefined, Set<string>>()
  entries.forEach((entry, index) => {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) {
      ignored.push({ index, kid: undefined, reason: 'not_an_object' })
      return
    }
    const jwk = entry as JsonWebKey
    if (jwk.kid !== undefined && typeof jwk.kid !== 'string') {
      ignored.push({ index, kid: undefined, reason: 'invalid_kid' })
      return
    }
    const kid = jwk.kid as string | undefined
    const parsed = parseOne(jwk, pinned)
    if ('reason' in parsed) {
      ignored.push({ index, kid, reason: parsed.reason })
      return
    }
    // two entries answering the same (kid, alg) would make the choice depend on order
    const taken = seen.get(kid) ?? new Set<string>()
    if (kid !== undefined && parsed.algorithms.some(a => taken.has(a))) {
      ignored.push({ index, kid, reason: 'duplicate_kid' })
      return
    }
    for (const a of parsed.algorithms) taken.add(a)
    seen.set(kid, taken)
    keys.push({ kid, ...parsed, handle: { alive: true } })
  })
  if (keys.length === 0) {
    const reasons = [...new Set(ignored.map(i => i.reason))].join(', ')
    throw new IssuerKeysError(IssuerKeysErrorCode.noUsableKeys,
      `the JWKS has no key usable for ${pinned.join(', ')}` + (reasons === '' ? '' : ` (ignored: ${reasons})`))
  }
  return { keys, ignored }
}

function parseOne (jwk: JsonWebKey, pinned: readonly RemoteAlgorithm[]): Omit<RemoteKey, 'kid' | 'handle'> | { reason: KeyRejection } {
  const problem = checkJwkMembers(jwk)
  if (problem !== undefined) return { reason: problem }
  if (jwk.alg !== undefined && !pinned.includes(jwk.alg as RemoteAlgorithm)) return { reason: KeyRejection.algorithmNotAllowed }
  const built = publicKeyFromJwk(jwk)
  if (!built.ok) return { reason: built.reason }
  const candidates = jwk.alg !== undefined ? [jwk.alg as RemoteAlgorithm] : pinned
  const algorithms: RemoteAlgorithm[] = []
  let firstReason: KeyRejection | undefined
  for (const alg of candidates) {
    const check = checkKeyForAlgorithm(built.key, alg)
    if (check.ok) algorithms.push(alg)
    else firstReason ??= check.reason
  }
  if (algorithms.length === 0) return { reason: firstReason ?? KeyRejection.keyTypeMismatch }
  return {
    algorithms,
    key: built.key,
    pem: built.key.export({ type: 'spki', format: 'pem' }).toString(),
    thumbprint: thumbprint(built.key),
  }
}

/** RFC 7638 §3: SHA-256 over the required public members in lexicographic order. */
export function thumbprint (key: KeyObject): string {
  const j = key.export({ format: 'jwk' })
  const required = j.kty === 'RSA'
    ? { e: j.e, kty: j.kty, n: j.n }
    : j.kty === 'EC'
      ? { crv: j.crv, kty: j.kty, x: j.x, y: j.y }
      : { crv: j.crv, kty: j.kty, x: j.x }
  return createHash('sha256').update(JSON.stringify(required)).digest('base64url')
}
