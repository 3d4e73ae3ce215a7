import { createHash, timingSafeEqual } from 'node:crypto'
import type { onRequestHookHandler } from 'fastify'
import { ErrorCode, GatewayError } from './errors.js'

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest()

/**
 * The admin listener's bearer check (`admin.token`): compared in constant time (digests of
 * equal length, timingSafeEqual), so neither the token's length nor its prefix leaks.
 */
export function adminTokenHook (token: string): onRequestHookHandler {
  const expected = sha256(token)
  return function adminToken (request, _reply, done) {
    const header = request.headers.authorization ?? ''
    const presented = header.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : ''
    if (presented === '' || !timingSafeEqual(sha256(presented), expected)) {
      done(new GatewayError(ErrorCode.adminUnauthorized, 401, 'the admin token is missing or wrong'))
      return
    }
    done()
  }
}
