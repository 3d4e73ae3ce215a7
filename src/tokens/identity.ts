import { ErrorCode, invalidToken } from '../errors.js'
import type { GatewayConfig } from '../config/types.js'
import { badClaim } from './jwt-errors.js'
import { isExactNumber, isWellFormed } from '../text.js'

export type IdentityHeader = readonly [name: string, value: string]

/** names the gateway writes for itself; inbound copies are stripped like the reserved prefix */
export const GATEWAY_HEADER_PREFIX = 'x-portcullis-'
/** names the identity headers left out because they did not fit identity.maxHeaderBytes */
export const TRUNCATED_HEADER = 'x-portcullis-identity-truncated'

// CR, LF and NUL would split or truncate a header (request smuggling); other C0 controls
// and DEL are refused by HTTP parsers. Such a claim makes the token invalid.
const UNSAFE = /[\u0000-\u0008\u000a-\u001f\u007f]/ // eslint-disable-line no-control-regex
const NON_ASCII = /[^\u0000-\u007f]/ // eslint-disable-line no-control-regex

/**
 * The identity headers a verified token gives the upstream (DESIGN: "The upstream's contract").
 * Each mapping walks a path into the claims (so `realm_access.roles` and a claim literally
 * named `https://example.com/roles` both work); strings as-is, numbers and booleans as text,
 * arrays and objects as compact JSON, nothing for a missing claim. Non-ASCII text is sent as
 * its UTF-8 bytes.
 *
 * All headers together stay within `identity.maxHeaderBytes`: a token with 500 groups must
 * not produce a request the upstream refuses (Node and nginx refuse headers past 16 KiB /
 * 8 KiB). Over the budget the largest headers are left out whole — never cut into a partial
 * list an upstream could misread as complete — and `x-portcullis-identity-truncated` names them.
 * Computed once per verified token (the verify cache keeps it), never per request.
 */
export function identityHeaders (claims: Readonly<Record<string, unknown>>, identity: GatewayConfig['identity'], scopes: ReadonlySet<string>): IdentityHeader[] {
  const out: IdentityHeader[] = []
  let bytes = 0
  for (const m of identity.mappings) {
    // the `scope` mapping (x-user-scopes by default) carries the scopes the gateway
    // authorized on — whatever claim the issuer keeps them in (`scp`, roles) — never the raw
    // `scope` claim, which beside `scopeClaim: scp` said what the client asked for
    // (`scope: "orders:admin superuser"` reached the upstream for a token granted orders:read)
    const value = m.path.length === 1 && m.path[0] === 'scope' ? (scopes.size === 0 ? undefined : spaced(scopes)) : claimAt(claims, m.path)
    if (value === undefined || value === null) continue
    const text = headerValue(value, m.path)
    bytes += m.header.length + text.length
    out.push([m.header, text])
  }
  if (identity.claimsHeader !== '') {
    const text = Buffer.from(JSON.stringify(claims)).toString('base64url')
    bytes += identity.claimsHeader.length + text.length
    out.push([identity.claimsHeader, text])
  }
  return bytes <= identity.maxHeaderBytes ? out : withinBudget(out, identity.maxHeaderBytes)
}

/** the scopes one space apart (a loop: a spread into an array and a join cost three times as much) */
function spaced (scopes: ReadonlySet<string>): string {
  let text = ''
  for (const s of scopes) text = text === '' ? s : text + ' ' + s
  return text
}

/** the value at a path of claim names; undefined when any step is missing */
export function claimAt (claims: Readonly<Record<string, unknown>>, path: readonly string[]): unknown {
  // most mappings name a top-level claim (sub, scope): one own-property read
  if (path.length === 1) return Object.hasOwn(claims, path[0] as string) ? claims[path[0] as string] : undefined
  let value: unknown = claims
  for (const key of path) {
    if (value === null || typeof value !== 'object' || Array.isArray(value) || !Object.hasOwn(value, key)) return undefined
    value = (value as Record<string, unknown>)[key]
  }
  return value
}

/**
 * A verified token's claims, once per verification (the verify cache keeps the verdict):
 * throws 401 token_invalid_claim when a claim the upstream receives could not arrive as its
 * issuer signed it, so that two different signed values would reach the upstream as one.
 *
 * - A string that is not well-formed UTF-16 — a lone surrogate, which a token carries as the
 *   JSON escape `\ud800` in valid UTF-8: its UTF-8 bytes in a header are U+FFFD's, so
 *   `admin\ud800`, `admin\udbff` and `admin\ufffd` were one `x-user-id`; in the assertion it
 *   stays escaped, but Go, Rust and most databases turn it into U+FFFD or refuse it
 *   (RFC 7493 §2.1: I-JSON carries no surrogate code points).
 * - An integer beyond 2^53 (or a number JSON.parse made Infinity): it was already rounded
 *   when the token was parsed, so `account_id` 1234567890123456789 and …700 both reached the
 *   upstream as …800, in headers and assertion (RFC 7493 §2.2).
 *
 * What the upstream receives: with an assertion or the claims header configured, every claim
 * (object keys included); otherwise `sub` and the mapped claims (the `scope` mapping carries
 * the granted scopes, which are ASCII scope tokens by construction: tokens/scopes.ts).
 */
export function forwardedClaimsCheck (identity: GatewayConfig['identity']): (claims: Readonly<Record<string, unknown>>) => void {
  if (identity.assertion !== undefined || identity.claimsHeader !== '') {
    return (claims) => {
      // the claim's name is the token's text: not echoed into error_description
      if (!faithful(claims)) throw invalidToken(ErrorCode.tokenBadClaim, 'the access token has a claim the upstream could not receive as it was signed')
    }
  }
  const paths: Array<readonly string[]> = [['sub']]
  for (const m of identity.mappings) {
    if (m.path.length === 1 && (m.path[0] === 'scope' || m.path[0] === 'sub')) continue
    paths.push(m.path)
  }
  return (claims) => {
    for (const path of paths) {
      const value = claimAt(claims, path)
      if (value !== undefined && !faithful(value)) throw badClaim(path.join('.'))
    }
  }
}

/**
 * true when every string (and object key) in `value` is well-formed UTF-16 and every number
 * finite, integers within ±(2^53 − 1). A loop with a stack, not recursion: a token of nested
 * arrays thousands deep must not overflow the call stack.
 */
function faithful (value: unknown): boolean {
  const pending: unknown[] = [value]
  while (pending.length > 0) {
    const v = pending.pop()
    if (typeof v === 'string') {
      if (!isWellFormed(v)) return false
    } else if (typeof v === 'number') {
      if (!isExactNumber(v)) return false
    } else if (Array.isArray(v)) {
      for (const item of v) pending.push(item)
    } else if (v !== null && typeof v === 'object') {
      for (const key of Object.keys(v)) {
        if (!isWellFormed(key)) return false
        pending.push((v as Record<string, unknown>)[key])
      }
    }
  }
  return true
}

function withinBudget (headers: IdentityHeader[], budget: number): IdentityHeader[] {
  const bySize = [...headers].sort((a, b) => (b[0].length + b[1].length) - (a[0].length + a[1].length))
  const dropped = new Set<string>()
  let bytes = headers.reduce((n, h) => n + h[0].length + h[1].length, 0)
  // the marker itself must fit too
  const marker = (): number => TRUNCATED_HEADER.length + [...dropped].join(',').length
  for (const h of bySize) {
    if (bytes + marker() <= budget) break
    dropped.add(h[0])
    bytes -= h[0].length + h[1].length
  }
  const kept: IdentityHeader[] = headers.filter(h => !dropped.has(h[0]))
  kept.push([TRUNCATED_HEADER, [...dropped].join(',')])
  return kept
}

/**
 * Text that cannot travel as an identity header value unchanged: the token carrying it is
 * refused. Besides control characters, a leading or trailing space or tab: HTTP drops those
 * (RFC 9110 §5.5), so a `sub` of " alice" reached the upstream as `x-user-id: alice` — another
 * user (fix-claim-whitespace-trimmed). Two character reads, no pattern: with tokens that are
 * all new this runs per request.
 */
export function unfitForHeader (text: string): boolean {
  return isSpaceOrTab(text.charCodeAt(0)) || isSpaceOrTab(text.charCodeAt(text.length - 1)) || UNSAFE.test(text)
}

function isSpaceOrTab (code: number): boolean {
  return code === 0x20 || code === 0x09
}

function headerValue (value: unknown, path: readonly string[]): string {
  const text = typeof value === 'string' ? value : typeof value === 'object' ? JSON.stringify(value) : String(value)
  if (unfitForHeader(text)) throw invalidToken(ErrorCode.tokenBadClaim, `the access token has an invalid ${path.join('.')} claim`)
  // Node writes header strings as latin1: hand it the UTF-8 bytes so they arrive intact
  return NON_ASCII.test(text) ? Buffer.from(text, 'utf8').toString('latin1') : text
}
