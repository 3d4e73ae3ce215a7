import fp from 'fastify-plugin'
import type { KeySet } from '../src/tokens/keys.js'

/** GET /.well-known/jwks.json: the public verification keys (none for HS256), so upstreams may verify tokens themselves. */
export default fp(async function jwks (app, opts: { keys: KeySet }) {
  const body = JSON.stringify(opts.keys.jwks)
  app.get('/.well-known/jwks.json', (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300').type('application/jwk-set+json').send(body)
  })
}, { name: 'portcullis-jwks', fastify: '5.x' })
