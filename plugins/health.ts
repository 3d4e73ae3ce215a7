import fp from 'fastify-plugin'

export interface HealthOptions {
  /** reasons the gateway is not ready (empty: ready); checked on each /readyz call */
  notReady: () => string[]
}

/** Liveness and readiness on the admin listener. */
export default fp(async function health (app, opts: HealthOptions) {
  app.get('/healthz', (_request, reply) => { reply.send({ status: 'ok' }) })
  app.get('/readyz', (_request, reply) => {
    const reasons = opts.notReady()
    reply.code(reasons.length === 0 ? 200 : 503).send({ status: reasons.length === 0 ? 'ready' : 'not_ready', reasons })
  })
}, { name: 'portcullis-health', fastify: '5.x' })
