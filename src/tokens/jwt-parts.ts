import { isUtf8 } from 'node:buffer'
import { ErrorCode, invalidToken } from '../errors.js'
import { malformed } from './jwt-errors.js'

/**
 * Reading a JWT's segments before its signature is checked. Only what decides which key to
 * use is read this way (the header; the payload's `iss` to pick the issuer), and nothing
 * read here is trusted beyond that choice.
 *
 * RFC 7519 §7.2: the decoded header and payload must be UTF-8. `Buffer#toString('utf8')`
 * would quietly turn a 0xFF byte into U+FFFD, so a signed `sub` with invalid bytes arrived
 * upstream as something else (issue 8, item 5): such a token is malformed.
 */
const BASE64URL = /^[A-Za-z0-9_-]+$/

export function decodeSegment (segment: string): Record<string, unknown> {
  if (!BASE64URL.test(segment)) throw malformed()
  const bytes = Buffer.from(segment, 'base64url')
  if (!isUtf8(bytes)) throw malformed()
  let value: unknown
  try {
    value = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw malformed()
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw malformed()
  return value as Record<string, unknown>
}

/**
 * The three segments; throws token_malformed unless there are exactly three, all non-empty
 * but the signature, each spelled the one way base64url spells its bytes.
 *
 * A segment's last character can carry bits that decode to nothing (4 of them when the
 * length is 2 past a multiple of 4, 2 when 3 past), and a length 1 past a multiple of 4 has
 * a character that decodes to nothing at all. Node and fast-jwt ignore them, so every signed
 * token had up to 16 spellings that all verified: one token, several texts — a distinct
 * verify-cache entry and assertion for each, and a "new" token to anything that tells tokens
 * apart by their text. RFC 4648 §3.5 lets a decoder refuse them; this one does (found for
 * Ed25519 signatures; every algorithm and segment had it).
 */
export function splitToken (token: string): [header: string, payload: string, signature: string] {
  const a = token.indexOf('.')
  const b = a === -1 ? -1 : token.indexOf('.', a + 1)
  // an empty signature (alg none) is left to the issuer, which refuses its algorithm first
  if (a <= 0 || b === -1 || b === a + 1 || token.indexOf('.', b + 1) !== -1) throw malformed()
  if (!canonicalEnd(token, 0, a) || !canonicalEnd(token, a + 1, b) || !canonicalEnd(token, b + 1, token.length)) throw malformed()
  return [token.slice(0, a), token.slice(a + 1, b), token.slice(b + 1)]
}

/** each base64url character's value; -1 for anything else */
const BASE64URL_VALUE = new Int8Array(128).fill(-1)
for (const [i, c] of [...'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'].entries()) BASE64URL_VALUE[c.charCodeAt(0)] = i
/** by length mod 4: the bits of the last character that decode to nothing (-1: no such length) */
const UNUSED_BITS = [0, -1, 0x0f, 0x03]

/** whether token[start, end) ends as canonical base64url does (its other characters are checked by the decoders) */
function canonicalEnd (token: string, start: number, end: number): boolean {
  const unused = UNUSED_BITS[(end - start) & 3] as number
  if (unused <= 0) return unused === 0
  const value = BASE64URL_VALUE[token.charCodeAt(end - 1)] ?? -1
  // a character outside the alphabet is refused by the decoders with the rest of the segment
  return value === -1 || (value & unused) === 0
}

/**
 * RFC 7515 §4.1.11: `crit` lists extensions the recipient must understand, or reject the
 * token. This gateway understands none, so a header carrying `crit` in any form is refused —
 * fast-jwt refused a listed extension but let a falsy value (`crit: ""`, `crit: false`,
 * `crit: 0`) through, which the RFC does not allow either (a non-empty array of names).
 */
export function refuseCritical (header: Record<string, unknown>): void {
  if (header.crit !== undefined) {
    throw invalidToken(ErrorCode.tokenUnsupportedCrit, 'the access token has a critical header this gateway does not understand')
  }
}
