import { ErrorCode, invalidRequest } from '../errors.js'

// RFC 6750 §2.1: credentials = "Bearer" 1*SP b64token
const B64TOKEN = /^[A-Za-z0-9\-._~+/]+=*$/

/**
 * The token from `Authorization: Bearer …` (scheme case-insensitive), undefined when the
 * request carries no bearer credentials ("not my token" — another scheme is not an invalid
 * token), or 400 invalid_request when the header claims Bearer but is malformed.
 */
export function extractBearer (header: string | undefined): string | undefined {
  if (header === undefined || header === '') return undefined
  const space = header.indexOf(' ')
  const scheme = space === -1 ? header : header.slice(0, space)
  if (scheme.length !== 6 || scheme.toLowerCase() !== 'bearer') return undefined
  const token = space === -1 ? '' : header.slice(space + 1).trimStart()
  if (token === '' || !B64TOKEN.test(token)) {
    throw invalidRequest(ErrorCode.malformedAuthorization, 'the Authorization header is not "Bearer <token>"')
  }
  return token
}
