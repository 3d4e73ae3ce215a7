import { ErrorCode, invalidRequest } from '../errors.js'

// RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/

/**
 * Browsers cannot set Authorization on a WebSocket, and a token in the URL ends up in logs.
 * So a browser offers the token as a subprotocol, `portcullis.bearer.<token>` (a JWT is all
 * tchars, RFC 9110 §5.6.2), next to the marker `portcullis` the gateway may answer with when
 * the upstream picks no protocol of its own. The Kubernetes API server does the same.
 * Both are removed before the upgrade goes upstream.
 */
export const MARKER_PROTOCOL = 'portcullis'
export const BEARER_PROTOCOL_PREFIX = 'portcullis.bearer.'

/**
 * The extract stage: the token from `Authorization: Bearer …` (scheme case-insensitive), or
 * for a WebSocket upgrade from its bearer subprotocol; undefined when the request carries no
 * bearer credentials ("not my token" — another scheme is not an invalid token). 400
 * invalid_request when the header claims Bearer but is malformed, or when a request uses
 * both ways at once (RFC 6750 §2: one method per request).
 */
export function extractBearer (header: string | undefined, protocols?: string | string[]): string | undefined {
  const fromProtocol = protocols === undefined ? undefined : bearerFromProtocols(protocols)
  if (header === undefined || header === '') return fromProtocol
  const space = header.indexOf(' ')
  const scheme = space === -1 ? header : header.slice(0, space)
  if (scheme.length !== 6 || scheme.toLowerCase() !== 'bearer') return fromProtocol
  if (fromProtocol !== undefined) {
    throw invalidRequest(ErrorCode.duplicateHeader, 'the access token was sent both in Authorization and as a WebSocket protocol')
  }
  const token = space === -1 ? '' : header.slice(space + 1).trimStart()
  if (token === '' || !B64TOKEN.test(token)) {
    throw invalidRequest(ErrorCode.malformedAuthorization, 'the Authorization header is not "Bearer <token>"')
  }
  return token
}

function bearerFromProtocols (protocols: string | string[]): string | undefined {
  let found: string | undefined
  for (const value of ([] as string[]).concat(protocols)) {
    if (!value.includes(BEARER_PROTOCOL_PREFIX)) continue
    for (const p of value.split(',')) {
      const t = p.trim()
      if (!t.startsWith(BEARER_PROTOCOL_PREFIX)) continue
      if (found !== undefined) throw invalidRequest(ErrorCode.duplicateHeader, 'more than one bearer WebSocket protocol')
      found = t.slice(BEARER_PROTOCOL_PREFIX.length)
      if (found === '' || !B64TOKEN.test(found)) throw invalidRequest(ErrorCode.malformedAuthorization, 'the bearer WebSocket protocol is malformed')
    }
  }
  return found
}
