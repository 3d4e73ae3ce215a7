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

/** the three segments; throws token_malformed unless there are exactly three, all non-empty */
export function splitToken (token: string): [header: string, payload: string, signature: string] {
  const a = token.indexOf('.')
  const b = a === -1 ? -1 : token.indexOf('.', a + 1)
  // an empty signature (alg none) is left to the issuer, which refuses its algorithm first
  if (a <= 0 || b === -1 || b === a + 1 || token.indexOf('.', b + 1) !== -1) throw malformed()
  return [token.slice(0, a), token.slice(a + 1, b), token.slice(b + 1)]
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
