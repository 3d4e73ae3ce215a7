import { ErrorCode, GatewayError } from '../errors.js'

/**
 * The path that is authorized must be exactly the path that is forwarded. Rather than
 * normalizing (and risking a different reading than the upstream's), the gateway refuses
 * every path that some server could read differently: dot segments, encoded dots, slashes
 * and backslashes, anything double-encoded, empty segments, `;` path parameters, control
 * bytes (plain or encoded), fragments, invalid percent-encoding, non-origin-form targets —
 * and what a lenient upstream folds into another path (below: trailing dots and spaces,
 * characters a case-insensitive or "best fit" comparison turns into ASCII).
 * See CVE-2021-39162 (Envoy), CVE-2023-44487-era path tricks, and @fastify/http-proxy's
 * prefix escape fix; RFC 3986 §5.2.4 for dot segments.
 */

// %2e . | %2f / | %5c \ | %3b ; | %00–%1f, %7f control bytes (a `%0d%0a` a server decodes
// into its logs or a header) | %25 followed by hex: anything double-encoded, which a server
// that decodes twice reads as another path
const ENCODED_TRICKS = /%(?:2e|2f|5c|3b|[01][0-9a-f]|7f|25[0-9a-f]{2})/i
// an encoded unreserved character (ALPHA DIGIT - . _ ~) has no reason to be encoded
// (RFC 3986 §2.3, §6.2.2.2); a router and an upstream may disagree on decoding it
const ENCODED_UNRESERVED = /%(?:3[0-9]|4[1-9a-f]|5[0-9a]|6[1-9a-f]|7[0-9a]|2d|5f|7e)/i
// and any character outside ASCII: a request target is ASCII (RFC 9112 §3.2, RFC 3986 §2).
// Node's HTTP/1.1 parser refuses raw bytes above 0x7F; HTTP/2 hands `:path` over as latin1, so
// raw UTF-8 (`ſ` as C5 BF, a fullwidth `／`) reached the upstream past FOLDS_TO_ASCII, which
// sees only the encoded forms (fix-raw-non-ascii-path-over-h2)
const BAD_CHARS = /[\\;#\u0000-\u001f\u007f-\uffff\s]/ // eslint-disable-line no-control-regex
// in the query: a `#` (a fragment is never part of a request target, RFC 9112 §3.2; `ws`
// refuses such a URL, which made a WebSocket upgrade a 500, and a plain route forwarded it
// raw), and any byte outside visible ASCII — HTTP/2 hands `:path` over as latin1, so raw
// UTF-8 in a query was forwarded re-encoded, neither the client's bytes nor what was checked,
// where HTTP/1.1's parser refuses it (fix-query-fragment-and-raw-bytes)
const BAD_QUERY_CHARS = /[#\u0000-\u0020\u007f-\uffff]/ // eslint-disable-line no-control-regex
const BAD_PERCENT = /%(?![0-9a-fA-F]{2})/
const DOT_SEGMENT = /(?:^|\/)\.{1,2}(?:\/|$)/
// a segment ending in `.` or an encoded space (plain or no-break): Windows, IIS and ASP.NET
// trim them, so `/api/admin.` is `/api/admin` there while the gateway matched it under `/api`
const TRIMMED_END = /(?:\.|%20|%c2%a0)(?:\/|$)/i
// encoded characters a lenient upstream compares as ASCII: ſ (U+017F) and the Kelvin sign
// (U+212A) upper/lower-case to `S`/`k` (.NET's OrdinalIgnoreCase routing, Java's
// equalsIgnoreCase), ı/İ (U+0131/U+0130) to `I`/`i`, and the fullwidth forms U+FF01–FF5E,
// which "best fit" mapping (IIS, Windows code pages) and NFKC turn into ASCII — `／` into `/`.
// A router that matched `/api/ſecrets` under `/api` would forward what such an upstream runs
// as `/api/secrets`
const FOLDS_TO_ASCII = /%c5%bf|%c4%b[01]|%e2%84%aa|%ef%bc%[89ab][0-9a-f]|%ef%bd%[89][0-9a-f]/i

export function pathRejected (why: string): GatewayError {
  return new GatewayError(ErrorCode.pathRejected, 400, `the request path is ambiguous (${why}) and was refused`)
}

/** Returns the path part of a request target, or throws 400 when it could be read two ways (or its query holds what no request target may). */
export function checkPath (url: string): string {
  const q = url.indexOf('?')
  const path = q === -1 ? url : url.slice(0, q)
  if (path.charCodeAt(0) !== 47 /* / */) throw pathRejected('not an absolute path')
  if (path.includes('//')) throw pathRejected('empty segment')
  if (BAD_CHARS.test(path)) throw pathRejected('forbidden character')
  // most paths have no `%`: one scan spares them the four encoding checks
  if (path.includes('%')) {
    if (BAD_PERCENT.test(path)) throw pathRejected('invalid percent-encoding')
    if (ENCODED_TRICKS.test(path)) throw pathRejected('encoded separator or dot')
    if (ENCODED_UNRESERVED.test(path)) throw pathRejected('needlessly encoded character')
    if (FOLDS_TO_ASCII.test(path)) throw pathRejected('a character some servers read as ASCII')
  }
  if (DOT_SEGMENT.test(path)) throw pathRejected('dot segment')
  if (TRIMMED_END.test(path)) throw pathRejected('segment ending in a dot or a space')
  if (q !== -1 && BAD_QUERY_CHARS.test(url.slice(q + 1))) throw pathRejected('forbidden character in the query')
  return path
}
