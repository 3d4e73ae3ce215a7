import { createHash, timingSafeEqual } from 'node:crypto'
import fp from 'fastify-plugin'
import { ErrorCode, GatewayError } from '../src/errors.js'
import { UserNotFoundError } from '../src/sessions/errors.js'
import type { SessionService } from '../src/sessions/service.js'
import type { Store } from '../src/sessions/store.js'

export interface AdminApiOptions {
  token: string
  service: SessionService
  store: Store
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest()

/**
 * The admin API on the admin listener, behind `admin.token`: list a user's sessions,
 * revoke one session, revoke a user (all sessions and access tokens), revoke one jti.
 * The token is compared in constant time (digests of equal length, timingSafeEqual).
 */
export default fp(async function adminApi (app, opts: AdminApiOptions) {
  const { service, store } = opts
  const expected = sha256(opts.token)

  app.register(async (api) => {
    api.addHook('onRequest', (request, _reply, done) => {
      const header = request.headers.authorization ?? ''
      const presented = header.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : ''
      if (presented === '' || !timingSafeEqual(sha256(presented), expected)) {
        done(new GatewayError(ErrorCode.missingToken, 401, 'the admin token is missing or wrong'))
        return
      }
      done()
    })

    api.get('/admin/users/:name/sessions', async (request) => {
      const { name } = request.params as { name: string }
      return { sessions: await service.listSessions(name) }
    })

    api.post('/admin/users/:name/revoke', async (request, reply) => {
      const { name } = request.params as { name: string }
      const user = await store.findUserByName(name)
      if (user === undefined) throw new UserNotFoundError(name)
      const sessions = await service.revokeUser(user.id)
      reply.send({ revoked: { user: name, sessions } })
    })

    api.delete('/admin/sessions/:sid', async (request, reply) => {
      const { sid } = request.params as { sid: string }
      await service.revokeSession(sid)
      reply.code(204).send()
    })

    api.post('/admin/revocations/jti', {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['jti', 'exp'],
          properties: { jti: { type: 'string', minLength: 1, maxLength: 200 }, exp: { type: 'integer', minimum: 0 } },
        },
      },
    }, async (request, reply) => {
      const { jti, exp } = request.body as { jti: string, exp: number }
      await service.revokeJti(jti, exp)
      reply.code(204).send()
    })
  })
}, { name: 'portcullis-admin-api', fastify: '5.x', dependencies: ['portcullis-errors'] })
