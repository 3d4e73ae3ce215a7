import fp from 'fastify-plugin'
import { adminTokenHook } from '../src/admin-token.js'
import type { ReloadResult } from '../src/app.js'

/**
 * POST /admin/reload on the admin listener, behind `admin.token`: loads gateway.yaml again
 * and applies it whole (src/app.ts `reload`). 200 with the new hash, or 422 with every
 * problem and the hash still in force.
 */
export default fp(async function adminReload (app, opts: { token: string, reload: () => Promise<ReloadResult> }) {
  await app.register(async (scope) => {
    scope.addHook('onRequest', adminTokenHook(opts.token))
    scope.post('/admin/reload', async (_request, reply) => {
      const result = await opts.reload()
      reply.code(result.ok ? 200 : 422).header('cache-control', 'no-store').send(result)
    })
  })
}, { name: 'portcullis-admin-reload', fastify: '5.x' })
