import { ErrorCode, invalidToken } from '../errors.js'
import type { GatewayConfig } from '../config/types.js'

export type IdentityHeader = readonly [name: string, value: string]

// CR, LF and NUL would split or truncate a header (request smuggling); other C0 controls
// and DEL are refused by HTTP parsers. Such a claim makes the token invalid.
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f]/ // eslint-disable-line no-control-regex
const NON_ASCII = /[^\u0000-\u007f]/ // eslint-disable-line no-control-regex

/**
 * The identity headers a verified token gives the upstream (DESIGN: "The upstream's contract").
 * Strings as-is, numbers and booleans as text, arrays and objects as compact JSON, nothing for
 * a missing claim. Non-ASCII text is sent as its UTF-8 bytes.
 */
export function identityHeaders (claims: Readonly<Record<string, unknown>>, identity: GatewayConfig['identity']): IdentityHeader[] {
  const out: IdentityHeader[] = []
  for (const claim in identity.headers) {
    const value = claims[claim]
    if (value === undefined || value === null) continue
    out.push([identity.headers[claim] as string, headerValue(value, claim)])
  }
  if (identity.claimsHeader !== '') {
    out.push([identity.claimsHeader, Buffer.from(JSON.stringify(claims)).toString('base64url')])
  }
  return out
}

function headerValue (value: unknown, claim: string): string {
  const text = typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value)
  if (UNSAFE.test(text)) throw invalidToken(ErrorCode.tokenBadClaim, `the access token has an invalid ${claim} claim`)
  // Node writes header strings as latin1: hand it the UTF-8 bytes so they arrive intact
  return NON_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text
}
