import type { IncomingMessage } from 'node:http'
import { badRequest, ErrorCode, GatewayError, invalidRequest } from '../errors.js'
import { checkPath } from './path.js'

/**
 * The first stage, for every request on the public listener (the gateway's own endpoints
 * included): refuse what a server behind us could read differently from the way we read it.
 * Node's parser already refuses conflicting Content-Length/Transfer-Encoding, repeated
 * Transfer-Encoding lines, bare LF and obsolete line folding; what it lets through is here.
 *
 * - the path (path.ts): dot segments, encoded separators, `//`, `;`, control characters;
 * - Host (RFC 9112 §3.2, RFC 9110 §7.2): present once for HTTP/1.1, and a plain
 *   `host[:port]` — `Host: 127.0.0.1:8080/admin` or `Host: bad host` is a 400, never forwarded;
 *   over HTTP/2 a Host beside :authority must name the same host (RFC 9113 §8.3.1);
 * - headers Node keeps only the first copy of, where the copies could disagree between us
 *   and the upstream: two `Authorization` lines (RFC 6750 §2: one credential per request),
 *   two `Host`, two `Content-Type` (the CSRF check reads it);
 * - Transfer-Encoding other than a lone `chunked` (RFC 9112 §6.1: `gzip, chunked` is legal
 *   HTTP, but a proxy that forwards it invites a desync with an upstream that decodes
 *   differently) → 501, as nginx does.
 */

// RFC 3986 authority, narrowed to what DNS names and IP literals use: letters, digits, `-`,
// `.`, `_`, an IPv6 literal in brackets, and a port of up to five digits
const HOST = /^(?:\[[0-9A-Fa-f:.]{2,45}\]|[A-Za-z0-9._-]{1,253})(?::[0-9]{1,5})?$/

// length of each header name Node reduces to its first copy, by lower-case name
const SINGLE_COPY: ReadonlyMap<number, readonly string[]> = new Map([
  [4, ['host']],
  [12, ['content-type']],
  [13, ['authorization']],
])

export function checkRequest (req: IncomingMessage): void {
  checkPath(req.url ?? '')
  // HTTP/2 carries the host as the :authority pseudo-header (RFC 9113 §8.3.1); a Host beside
  // it naming another host is malformed there, and one of the two would go unchecked
  const authority = req.headers[':authority'] as string | undefined
  const host = req.headers.host ?? authority
  if (authority !== undefined && host !== undefined && host !== authority && host.toLowerCase() !== authority.toLowerCase()) {
    throw badRequest(ErrorCode.badHost, 'the Host header and :authority name different hosts')
  }
  if (host === undefined) {
    if (req.httpVersionMajor === 1 && req.httpVersionMinor >= 1) throw badRequest(ErrorCode.badHost, 'the request has no Host header')
  } else if (!HOST.test(host)) {
    throw badRequest(ErrorCode.badHost, 'the Host header is not a host name with an optional port')
  }
  const te = req.headers['transfer-encoding']
  if (te !== undefined && te.toLowerCase() !== 'chunked') {
    throw new GatewayError(ErrorCode.unsupportedTransferEncoding, 501, 'only Transfer-Encoding: chunked is supported')
  }
  checkSingleCopies(req.rawHeaders)
}

function checkSingleCopies (raw: readonly string[]): void {
  let seen: string[] | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    const candidates = SINGLE_COPY.get(name.length)
    if (candidates === undefined) continue
    const lower = name.toLowerCase()
    if (!candidates.includes(lower)) continue
    if (seen === undefined) seen = [lower]
    else if (seen.includes(lower)) throw duplicate(lower)
    else seen.push(lower)
  }
}

function duplicate (name: string): GatewayError {
  if (name === 'authorization') return invalidRequest(ErrorCode.duplicateHeader, 'the request carries more than one Authorization header')
  if (name === 'host') return badRequest(ErrorCode.badHost, 'the request carries more than one Host header')
  return badRequest(ErrorCode.duplicateHeader, `the request carries more than one ${name} header`)
}

// access_token in the query (RFC 6750 §2.3), in any case or percent-encoding of its name
const MAYBE_TOKEN_PARAM = /access|%/i

/**
 * RFC 6750 §2: a client uses one method to send its token. A token in the query string
 * would be forwarded and land in the upstream's logs; on routes that look at tokens it is
 * refused (400 invalid_request), whether or not an Authorization header came too.
 */
export function checkQueryToken (url: string): void {
  const q = url.indexOf('?')
  if (q === -1) return
  const query = url.slice(q + 1)
  if (!MAYBE_TOKEN_PARAM.test(query)) return
  let params: URLSearchParams
  try {
    params = new URLSearchParams(query)
  } catch {
    return
  }
  for (const key of params.keys()) {
    if (key.toLowerCase() === 'access_token') {
      throw invalidRequest(ErrorCode.tokenInQuery, 'send the access token in the Authorization header, not in the query string')
    }
  }
}
