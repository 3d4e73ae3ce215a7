import fp from 'fastify-plugin'
import { Reason } from '../src/pipeline/auth-state.js'

/**
 * GET /.well-known/jwks.json: the public verification keys (none for HS256) — of the access
 * tokens and of the assertions — so upstreams may verify either themselves. Serialized once
 * per configuration (a reload that rotates keys serves the new set at once).
 */
export default fp(async function jwks (app) {
  app.get('/.well-known/jwks.json', (request, reply) => {
    request.auth.route = 'jwks'
    request.auth.granted = true
    request.auth.reason = Reason.public
    // public keys are public: any origin may read them (no credentials involved)
    reply.header('cache-control', 'public, max-age=300').header('access-control-allow-origin', '*')
      .type('application/jwk-set+json').send(request.runtime.jwksBody)
  })
}, { name: 'portcullis-jwks', fastify: '5.x', dependencies: ['portcullis-edge'] })
