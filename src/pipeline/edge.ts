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
 *   differently) → 501, as nginx does;
 * - an upgrade that is not a well-formed WebSocket handshake (checkUpgrade).
 */

// RFC 3986 authority, narrowed to what DNS names and IP literals use: letters, digits, `-`,
// `.`, `_`, an IPv6 literal in brackets, and a port of up to five digits
const HOST = /^(?:\[([0-9A-Fa-f:.]{2,45})\]|([A-Za-z0-9._-]{1,253}))(?::[0-9]{1,5})?$/

/** the host of a Host value this edge accepts (an IPv6 literal without its brackets); undefined for one it refuses */
export function hostNameOf (host: string): string | undefined {
  const m = HOST.exec(host)
  return m === null ? undefined : m[1] ?? m[2]
}
// the last Host that passed: clients send the same one request after request, and comparing
// it costs a fraction of the pattern (~430 instructions a request, bench/icount.ts)
let lastGoodHost: string | undefined

export function checkRequest (req: IncomingMessage, upgrade = false): void {
  if ((req.socket as { [kClosing]?: boolean } | null)?.[kClosing] === true) throw connectionClosing()
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
  } else if (host !== lastGoodHost) {
    if (!HOST.test(host)) throw badRequest(ErrorCode.badHost, 'the Host header is not a host name with an optional port')
    lastGoodHost = host
  }
  const te = req.headers['transfer-encoding']
  if (te !== undefined && te.toLowerCase() !== 'chunked') {
    throw new GatewayError(ErrorCode.unsupportedTransferEncoding, 501, 'only Transfer-Encoding: chunked is supported')
  }
  checkSingleCopies(req.rawHeaders)
  if (upgrade) checkUpgrade(req)
}

const kClosing = Symbol('portcullis.connectionClosing')

/**
 * HTTP/1.1: the request's body may still be on the wire (declared and not all read): the
 * connection cannot carry another request after the answer. A request without a body never
 * is — its answer keeps the connection (a 401 closed keep-alive connections, and a TLS
 * client paid a new handshake after every refusal).
 */
export function bodyUnread (req: IncomingMessage): boolean {
  if (req.httpVersionMajor !== 1 || req.complete) return false
  const length = req.headers['content-length']
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined
}

/**
 * The answer to `req` closes its connection: requests the client pipelined behind it, which
 * Node parses and dispatches all the same, are refused at the edge (connection_closing) — a
 * POST pipelined after a refused request reached the upstream while its answer was thrown
 * away with the connection (fix-h2-review).
 */
export function closeAfterAnswer (req: IncomingMessage): void {
  const socket = req.socket as { [kClosing]?: boolean } | null
  if (socket !== null) socket[kClosing] = true
}

function connectionClosing (): GatewayError {
  return badRequest(ErrorCode.connectionClosing, 'the connection closes after an earlier answer')
}

function checkSingleCopies (raw: readonly string[]): void {
  let seen: string[] | undefined
  for (let i = 0; i < raw.length; i += 2) {
    const name = singleCopy(raw[i] as string)
    if (name === undefined) continue
    if (seen === undefined) seen = [name]
    else if (seen.includes(name)) throw duplicate(name)
    else seen.push(name)
  }
}

/**
 * The headers Node reduces to their first copy, by the length of their name, each compared
 * first with the spelling clients usually send: the usual request lower-cases nothing and
 * looks nothing up (a new string per header cost ~300 instructions a request, a Map lookup
 * per header ~100; bench/icount.ts)
 */
function singleCopy (name: string): string | undefined {
  switch (name.length) {
    case 4: return name === 'Host' || name === 'host' || name.toLowerCase() === 'host' ? 'host' : undefined
    case 12: return name === 'Content-Type' || name === 'content-type' || name.toLowerCase() === 'content-type' ? 'content-type' : undefined
    case 13: return name === 'Authorization' || name === 'authorization' || name.toLowerCase() === 'authorization' ? 'authorization' : undefined
    default: return undefined
  }
}

function duplicate (name: string): GatewayError {
  if (name === 'authorization') return invalidRequest(ErrorCode.duplicateHeader, 'the request carries more than one Authorization header')
  if (name === 'host') return badRequest(ErrorCode.badHost, 'the request carries more than one Host header')
  return badRequest(ErrorCode.duplicateHeader, `the request carries more than one ${name} header`)
}

// RFC 6455 §4.1: a base64-encoded 16-byte nonce; RFC 9110 §5.6.2: a token
const WEBSOCKET_KEY = /^[+/0-9A-Za-z]{22}==$/
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/

/**
 * An upgrade is checked whole before anything is sent upstream (the proxy opens the upstream
 * WebSocket first, so a handshake `ws` would refuse afterwards must never get that far): a
 * GET (RFC 6455 §4.1; so it is authorized under the GET rule, never under `*` as a POST)
 * without a body,
 * `Upgrade: websocket` alone (an h2c or other upgrade is not proxied), a well-formed
 * Sec-WebSocket-Key, version 13 (or 8, which `ws` also speaks), and subprotocols that are
 * tokens, each offered once.
 */
export function checkUpgrade (req: IncomingMessage): void {
  const headers = req.headers
  if (req.method !== 'GET') throw badUpgrade('a WebSocket upgrade must be a GET request')
  // a handshake has no body: one declared would be read as WebSocket frames once the
  // connection switched, and its Content-Length reached the upstream's handshake with no body
  // behind it (fix-upgrade-with-body)
  const length = headers['content-length']
  if ((length !== undefined && length !== '0') || headers['transfer-encoding'] !== undefined) throw badUpgrade('a WebSocket upgrade has no body')
  const upgrade = headers.upgrade
  if (upgrade === undefined || upgrade.toLowerCase() !== 'websocket') throw badUpgrade('only WebSocket upgrades (Upgrade: websocket) are accepted')
  const key = headers['sec-websocket-key']
  if (key === undefined || !WEBSOCKET_KEY.test(key)) throw badUpgrade('the upgrade has no valid Sec-WebSocket-Key')
  const version = headers['sec-websocket-version']
  if (version !== '13' && version !== '8') throw badUpgrade('the upgrade has no supported Sec-WebSocket-Version (13)')
  const protocols = headers['sec-websocket-protocol']
  if (protocols === undefined) return
  const seen = new Set<string>()
  for (const p of ([] as string[]).concat(protocols).join(',').split(',')) {
    const name = p.trim()
    if (!TOKEN.test(name) || seen.has(name)) throw badUpgrade('the upgrade offers an invalid or repeated Sec-WebSocket-Protocol')
    seen.add(name)
  }
}

function badUpgrade (message: string): GatewayError {
  return badRequest(ErrorCode.badUpgrade, message)
}

// names in the query a server behind the gateway may act on: access_token (RFC 6750 §2.3)
// and the method-override parameter `_method` (Rails, Laravel, Symfony), in any case or
// percent-encoding of the name
const MAYBE_SENSITIVE_PARAM = /access|method|%/i

/**
 * A query parameter's name as PHP reads it (and so Symfony and Laravel, which take `_method`
 * from PHP's `$_GET`): leading spaces dropped, `.`, ` ` and `[` read as `_`, and `a[…]` as
 * `a` — `?.method=DELETE` and `?%20_method=DELETE` are `$_GET['_method']`
 * (fix-method-override-php-spellings). Reading every `[` as `_` (PHP only reads an unmatched
 * one so) refuses more, never less. Lower case: the names compared are.
 */
function phpParamName (key: string): string {
  let name = key.trimStart()
  const open = name.indexOf('[')
  if (open > 0 && name.indexOf(']', open) !== -1) name = name.slice(0, open)
  const nul = name.indexOf('\u0000')
  if (nul !== -1) name = name.slice(0, nul)
  return name.replace(/[ .[]/g, '_').toLowerCase()
}

/**
 * The query stage of a proxied route, for what cannot be stripped without changing the
 * request that was authorized:
 * - RFC 6750 §2: a client uses one method to send its token. A token in the query string
 *   would be forwarded and land in the upstream's logs; on routes that look at tokens
 *   (`tokenRoute`) it is refused (400 invalid_request), whether or not an Authorization
 *   header came too.
 * - `_method=DELETE` on a POST is run as a DELETE by Rails (Rack::MethodOverride, on by
 *   default), Laravel and Symfony: the method that was authorized would not be the one that
 *   runs (the header spellings are stripped by the rewriter). Refused on every route for
 *   every method but GET and HEAD, which those frameworks never override.
 * Both names are compared as PHP reads them (phpParamName), in any case or encoding.
 */
export function checkQuery (url: string, method: string, tokenRoute: boolean): void {
  const q = url.indexOf('?')
  if (q === -1) return
  const overridable = method !== 'GET' && method !== 'HEAD'
  if (!tokenRoute && !overridable) return
  const query = url.slice(q + 1)
  if (!MAYBE_SENSITIVE_PARAM.test(query)) return
  let params: URLSearchParams
  try {
    params = new URLSearchParams(query)
  } catch {
    return
  }
  for (const key of params.keys()) {
    const name = phpParamName(key)
    if (tokenRoute && name === 'access_token') {
      throw invalidRequest(ErrorCode.tokenInQuery, 'send the access token in the Authorization header, not in the query string')
    }
    if (overridable && name === '_method') {
      throw badRequest(ErrorCode.methodOverride, 'a method-override parameter (_method) is refused: send the method itself')
    }
  }
}
