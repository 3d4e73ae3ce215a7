/**
 * Refresh token material. A token is 32 random bytes, base64url (43 chars); the
 * database holds only its SHA-256. A plain hash (no salt, no argon2) is right here: the
 * input has 256 bits of entropy, so it cannot be guessed, and lookups must be by hash.
 *
 * Reuse grace: when a token is rotated, the successor's plaintext is sealed with
 * AES-256-GCM under HKDF-SHA256(presented plaintext). Only a client that still holds
 * the presented token (a second tab racing the first) can open it and receive the same
 * successor; a database reader learns nothing usable, since it has only the hash of
 * the key material.
 */
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto'

export const REFRESH_TOKEN_BYTES = 32
const TOKEN_PATTERN = /^[A-Za-z0-9_-]{43}$/
const SEAL_INFO = 'portcullis refresh-token successor v1'
const IV_BYTES = 12
const TAG_BYTES = 16

export function newRefreshToken (): string {
  return randomBytes(REFRESH_TOKEN_BYTES).toString('base64url')
}

/** rejects anything that cannot be one of ours before touching the database */
export function isWellFormedRefreshToken (token: unknown): token is string {
  return typeof token === 'string' && TOKEN_PATTERN.test(token)
}

export function hashRefreshToken (token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url')
}

/** a random id for sessions (`sid`): 128 bits */
export function newSessionId (): string {
  return randomBytes(16).toString('base64url')
}

function sealKey (presented: string): Buffer {
  return Buffer.from(hkdfSync('sha256', Buffer.from(presented, 'utf8'), Buffer.alloc(0), SEAL_INFO, 32))
}

/** seals `successor` so that only a holder of `presented` can open it; AAD binds it to the row */
export function sealSuccessor (presented: string, successor: string): string {
  const iv = randomBytes(IV_BYTES)
  const cipher = createCipheriv('aes-256-gcm', sealKey(presented), iv)
  cipher.setAAD(Buffer.from(hashRefreshToken(presented)))
  const body = Buffer.concat([cipher.update(successor, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')
}

/** the successor plaintext, or undefined if the seal does not open with `presented` */
export function openSuccessor (presented: string, sealed: string): string | undefined {
  try {
    const raw = Buffer.from(sealed, 'base64url')
    const decipher = createDecipheriv('aes-256-gcm', sealKey(presented), raw.subarray(0, IV_BYTES))
    decipher.setAAD(Buffer.from(hashRefreshToken(presented)))
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES))
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}
