import fp from 'fastify-plugin'
import { healthReport, type HealthCheck } from '../src/health.js'

export interface HealthOptions {
  /** every component's check, read on each /readyz call */
  checks: () => HealthCheck[] | Promise<HealthCheck[]>
}

/** Liveness and readiness on the admin listener (src/health.ts says what each status means). */
export default fp(async function health (app, opts: HealthOptions) {
  app.get('/healthz', (_request, reply) => { reply.header('cache-control', 'no-store').send({ status: 'ok' }) })
  app.get('/readyz', async (_request, reply) => {
    const report = healthReport(await opts.checks())
    reply.code(report.status === 'not_ready' ? 503 : 200).header('cache-control', 'no-store').send(report)
  })
}, { name: 'portcullis-health', fastify: '5.x' })
