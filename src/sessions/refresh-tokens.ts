/**
 * Refresh token material. The database holds only SHA-256 hashes of tokens. A plain
 * hash (no salt, no argon2) is right here: every token carries 256 random bits, so it
 * cannot be guessed, and lookups must be by hash.
 *
 * Two formats:
 * - session tokens (current): `<sid>.<base64url(secret ‖ tag)>` — 22 + 1 + 64 chars.
 *   `secret` is 32 random bytes; `tag` = HMAC-SHA256(session's refresh key, sid ‖ secret),
 *   truncated to 16 bytes. The session row keeps the hash of the current and of the
 *   previous token only; the tag lets a spent token of ANY age be recognised as "ours"
 *   (reuse → the family is revoked) without a row per rotation. Knowing a sid is not
 *   enough to forge one (no key), so a sid seen in a log or an assertion cannot be used
 *   to get a session revoked. The key cannot mint a usable token either: the current
 *   token's secret exists only as a hash.
 * - legacy tokens: 43 chars (32 random bytes), one `refresh_tokens` row each; still
 *   accepted until they expire, and moved to the session format at their next rotation.
 *
 * Reuse grace: when a token is rotated, the successor's plaintext is sealed with
 * AES-256-GCM under HKDF-SHA256(presented plaintext). Only a client that still holds
 * the presented token (a second tab racing the first) can open it and receive the same
 * successor; a database reader learns nothing usable, since it has only the hash of
 * the key material.
 */
import { createCipheriv, createDecipheriv, createHash, createHmac, hkdfSync, randomBytes, timingSafeEqual } from 'node:crypto'

export const REFRESH_TOKEN_BYTES = 32
const TAG_BYTES = 16
const LEGACY_PATTERN = /^[A-Za-z0-9_-]{43}$/
const SESSION_TOKEN_PATTERN = /^([A-Za-z0-9_-]{22})\.([A-Za-z0-9_-]{64})$/
const SEAL_INFO = 'portcullis refresh-token successor v1'
const IV_BYTES = 12
const GCM_TAG_BYTES = 16

export type ParsedRefreshToken =
  | { format: 'legacy', token: string }
  | { format: 'session', token: string, sid: string, secret: Buffer, tag: Buffer }

/** the structure of a token, or undefined if it cannot be one of ours (checked before any database work) */
export function parseRefreshToken (token: unknown): ParsedRefreshToken | undefined {
  if (typeof token !== 'string') return undefined
  if (LEGACY_PATTERN.test(token)) return { format: 'legacy', token }
  const m = SESSION_TOKEN_PATTERN.exec(token)
  if (m === null) return undefined
  const raw = Buffer.from(m[2]!, 'base64url')
  // 64 base64url chars are exactly 48 bytes; a non-canonical spelling is not ours
  if (raw.length !== REFRESH_TOKEN_BYTES + TAG_BYTES || raw.toString('base64url') !== m[2]) return undefined
  return { format: 'session', token, sid: m[1]!, secret: raw.subarray(0, REFRESH_TOKEN_BYTES), tag: raw.subarray(REFRESH_TOKEN_BYTES) }
}

export function isWellFormedRefreshToken (token: unknown): token is string {
  return parseRefreshToken(token) !== undefined
}

/** a legacy-format token (tests of the migration path; the service no longer issues them) */
export function newLegacyRefreshToken (): string {
  return randomBytes(REFRESH_TOKEN_BYTES).toString('base64url')
}

/** a per-session key for the family tag: 32 random bytes, base64url */
export function newRefreshKey (): string {
  return randomBytes(32).toString('base64url')
}

function familyTag (refreshKey: string, sid: string, secret: Buffer): Buffer {
  return createHmac('sha256', Buffer.from(refreshKey, 'base64url')).update(sid, 'utf8').update(secret).digest().subarray(0, TAG_BYTES)
}

/** a new token of session `sid`, tagged with the session's refresh key */
export function newSessionRefreshToken (sid: string, refreshKey: string): string {
  const secret = randomBytes(REFRESH_TOKEN_BYTES)
  return `${sid}.${Buffer.concat([secret, familyTag(refreshKey, sid, secret)]).toString('base64url')}`
}

/** whether a session-format token was issued for this session (any generation) */
export function hasFamilyTag (parsed: Extract<ParsedRefreshToken, { format: 'session' }>, refreshKey: string): boolean {
  return timingSafeEqual(familyTag(refreshKey, parsed.sid, parsed.secret), parsed.tag)
}

export function hashRefreshToken (token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('base64url')
}

/** a random id for sessions (`sid`): 128 bits, 22 base64url chars */
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
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + GCM_TAG_BYTES))
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + GCM_TAG_BYTES)), decipher.final()]).toString('utf8')
  } catch {
    return undefined
  }
}
