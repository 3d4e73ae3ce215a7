/**
 * portcullis/upstream — the kit for services behind the gateway: a Fastify plugin that
 * verifies the gateway's signed identity assertion and exposes the caller as
 * `request.portcullisUser` (the kit's own, read-only) and `request.user` (shared with any
 * other @fastify/jwt of the app: its jwtVerify replaces it).
 *
 * ```ts
 * import Fastify from 'fastify'
 * import portcullis from 'portcullis/upstream'
 *
 * const app = Fastify()
 * await app.register(portcullis, {
 *   jwksUrl: 'https://gateway.internal/.well-known/jwks.json',
 *   issuer: 'https://auth.example.test',      // the gateway's tokens.issuer
 *   audience: 'https://orders.internal',      // this route's assertion.audience
 *   algorithms: ['EdDSA'],                    // the gateway's tokens.algorithm
 * })
 * app.get('/orders', async (request) => ({ user: request.portcullisUser?.sub }))
 * ```
 */
import plugin from './plugin.js'

export { requireScopes } from './plugin.js'
export { assertionError } from './errors.js'
export { checkUpstreamOptions, UPSTREAM_DEFAULTS } from './options.js'
export type { PortcullisUpstreamOptions } from './options.js'
export type { PortcullisUser } from './types.js'
export { ASSERTION_TYP } from '../tokens/assertion.js'
export { ErrorCode, GatewayError } from '../errors.js'
export { plugin as portcullisUpstream }
export default plugin
