import { createPublicKey, KeyObject, type JsonWebKey } from 'node:crypto'
import { ISSUER_ALGORITHMS } from '../../../config/schema.js'

/**
 * The algorithms an external issuer may be pinned to. Only asymmetric ones: a key that comes
 * from a published JWKS is public, so an HS* "secret" made of it is known to everybody
 * (the RS256→HS256 key-confusion attack). `none` is never a signature.
 */
export const ALLOWED_ALGORITHMS = ISSUER_ALGORITHMS
export type RemoteAlgorithm = typeof ALLOWED_ALGORITHMS[number]

const ALLOWED = new Set<string>(ALLOWED_ALGORITHMS)

export function isAllowedAlgorithm (alg: unknown): alg is RemoteAlgorithm {
  return typeof alg === 'string' && ALLOWED.has(alg)
}

/** RSA below 2048 bits is refused (NIST SP 800-131A); above 8192 only costs verify time. */
export const MIN_RSA_BITS = 2048
export const MAX_RSA_BITS = 8192
/**
 * The RSA public exponent must be odd and in [3, 2^32): e = 1 makes every padded hash its own
 * signature (anyone could sign with a key that publishes it), an even e is no RSA key, and an e
 * as long as the modulus makes each verification ~300 times dearer — a flood of junk tokens
 * naming such a key stalls every issuer on the process (fix-idp-rsa-exponent). Every IdP and
 * key generator uses 65537; 3 and 17 are legacy but sound with a strict verifier (OpenSSL's).
 */
export const MIN_RSA_EXPONENT = 3n
export const MAX_RSA_EXPONENT = 1n << 32n

/** is `e` an exponent a verification key may have (MIN_RSA_EXPONENT) */
export function rsaExponentAcceptable (e: bigint | undefined): boolean {
  return e !== undefined && e % 2n === 1n && e >= MIN_RSA_EXPONENT && e < MAX_RSA_EXPONENT
}

/** Why a key cannot verify for an algorithm; stable, for logs and status. */
export const KeyRejection = {
  algorithmNotAllowed: 'algorithm_not_allowed',
  algorithmMismatch: 'jwk_alg_mismatch',
  privateKeyMaterial: 'private_key_material',
  notForSignatures: 'not_a_signature_key',
  unsupportedKeyType: 'unsupported_key_type',
  keyTypeMismatch: 'key_type_mismatch',
  curveMismatch: 'curve_mismatch',
  rsaTooSmall: 'rsa_key_too_small',
  rsaTooLarge: 'rsa_key_too_large',
  rsaBadExponent: 'rsa_bad_exponent',
  invalidKey: 'invalid_key',
} as const
export type KeyRejection = typeof KeyRejection[keyof typeof KeyRejection]

export type KeyCheck = { ok: true, key: KeyObject } | { ok: false, reason: KeyRejection }

/** The curve each ECDSA algorithm requires (RFC 7518 §3.4), as node:crypto names it. */
const EC_CURVE: Readonly<Record<string, string>> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' }

/** JWK members that only a private or symmetric key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1). */
const PRIVATE_MEMBERS = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'oth', 'k'] as const

/**
 * Whether `key` may verify signatures made with `alg`: the algorithm is one we allow, the key
 * is public, its type matches the algorithm (RSA for RS and PS, EC on the algorithm's own
 * curve for ES, Ed25519 for EdDSA) and an RSA modulus has 2048 to 8192 bits. For a JWK it
 * also refuses private members, a `use` other than `sig`, `key_ops` without `verify` and an
 * `alg` other than `alg`, and builds the key from the public members only (x5c, x5u and
 * every other member are never read). Pure; the verifier may call it on every key it gets.
 */
export function checkKeyForAlgorithm (key: KeyObject | JsonWebKey, alg: string): KeyCheck {
  if (!isAllowedAlgorithm(alg)) return { ok: false, reason: KeyRejection.algorithmNotAllowed }
  if (key instanceof KeyObject) return checkKeyObject(key, alg)
  const jwkProblem = checkJwkMembers(key)
  if (jwkProblem !== undefined) return { ok: false, reason: jwkProblem }
  if (key.alg !== undefined && key.alg !== alg) return { ok: false, reason: KeyRejection.algorithmMismatch }
  const built = publicKeyFromJwk(key)
  if (!built.ok) return built
  return checkKeyObject(built.key, alg)
}

/** The JWK-level refusals that do not depend on the algorithm. */
export function checkJwkMembers (jwk: JsonWebKey): KeyRejection | undefined {
  for (const m of PRIVATE_MEMBERS) if (jwk[m] !== undefined) return KeyRejection.privateKeyMaterial
  if (jwk.use !== undefined && jwk.use !== 'sig') return KeyRejection.notForSignatures
  if (jwk.key_ops !== undefined && !(Array.isArray(jwk.key_ops) && jwk.key_ops.includes('verify'))) return KeyRejection.notForSignatures
  if (jwk.alg !== undefined && !isAllowedAlgorithm(jwk.alg)) return KeyRejection.algorithmNotAllowed
  return undefined
}

/**
 * node:crypto `createPublicKey({ format: 'jwk' })` on a copy that holds only the public
 * members of the key type, so nothing else in the JWK can influence the key.
 */
export function publicKeyFromJwk (jwk: JsonWebKey): KeyCheck {
  let members: JsonWebKey
  switch (jwk.kty) {
    case 'RSA': members = { kty: 'RSA', n: jwk.n, e: jwk.e }; break
    case 'EC': members = { kty: 'EC', crv: jwk.crv, x: jwk.x, y: jwk.y }; break
    case 'OKP': members = { kty: 'OKP', crv: jwk.crv, x: jwk.x }; break
    default: return { ok: false, reason: KeyRejection.unsupportedKeyType }
  }
  for (const v of Object.values(members)) if (typeof v !== 'string') return { ok: false, reason: KeyRejection.invalidKey }
  try {
    return { ok: true, key: createPublicKey({ key: members, format: 'jwk' }) }
  } catch {
    return { ok: false, reason: KeyRejection.invalidKey }
  }
}

function checkKeyObject (key: KeyObject, alg: RemoteAlgorithm): KeyCheck {
  if (key.type === 'private') return { ok: false, reason: KeyRejection.privateKeyMaterial }
  if (key.type !== 'public') return { ok: false, reason: KeyRejection.keyTypeMismatch }
  const type = key.asymmetricKeyType
  const details = key.asymmetricKeyDetails ?? {}
  switch (alg[0]) {
    case 'R':
    case 'P': {
      // an SPKI key may carry RSASSA-PSS parameters: then it is good for PS* only
      if (type !== 'rsa' && !(type === 'rsa-pss' && alg[0] === 'P')) return { ok: false, reason: KeyRejection.keyTypeMismatch }
      const bits = details.modulusLength ?? 0
      if (bits < MIN_RSA_BITS) return { ok: false, reason: KeyRejection.rsaTooSmall }
      if (bits > MAX_RSA_BITS) return { ok: false, reason: KeyRejection.rsaTooLarge }
      if (!rsaExponentAcceptable(details.publicExponent)) return { ok: false, reason: KeyRejection.rsaBadExponent }
      return { ok: true, key }
    }
    case 'E': {
      if (alg === 'EdDSA') {
        // RFC 8037 EdDSA also covers Ed448; we pin Ed25519, the one IdPs publish
        return type === 'ed25519' ? { ok: true, key } : { ok: false, reason: KeyRejection.keyTypeMismatch }
      }
      if (type !== 'ec') return { ok: false, reason: KeyRejection.keyTypeMismatch }
      return details.namedCurve === EC_CURVE[alg] ? { ok: true, key } : { ok: false, reason: KeyRejection.curveMismatch }
    }
    default:
      return { ok: false, reason: KeyRejection.algorithmNotAllowed }
  }
}
