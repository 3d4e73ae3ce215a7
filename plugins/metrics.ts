import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import type { Denylist } from '../src/pipeline/denylist.js'
import type { TokenVerifier } from '../src/tokens/verifier.js'

export interface MetricsOptions {
  /** the public listener whose requests are counted */
  gateway: FastifyInstance
  denylist: Denylist
  /** the verifier in force (it changes with a reload) */
  verifier: () => TokenVerifier
  /** 1 when ready, 0 when not */
  ready: () => boolean
}

/**
 * GET /metrics on the admin listener, Prometheus text format. Requests are counted in the
 * public listener's onResponse hook into a Map keyed by route, status and reason (a few
 * dozen keys in practice); gauges are read when scraped. No dependency, no per-request I/O.
 */
export default fp(async function metrics (admin, opts: MetricsOptions) {
  const counts = new Map<string, number>()
  const startedAtSec = Math.floor(Date.now() / 1000)

  opts.gateway.addHook('onResponse', (request, reply, done) => {
    const auth = request.auth
    const key = `${auth?.route ?? ''}\u0000${reply.statusCode}\u0000${auth?.reason ?? 'unrouted'}`
    counts.set(key, (counts.get(key) ?? 0) + 1)
    done()
  })

  admin.get('/metrics', (_request, reply) => {
    const lines = [
      '# HELP portcullis_requests_total Requests on the public listener by route, status and decision reason.',
      '# TYPE portcullis_requests_total counter',
    ]
    for (const [key, n] of counts) {
      const [route, status, reason] = key.split('\u0000') as [string, string, string]
      lines.push(`portcullis_requests_total{route="${route}",status="${status}",reason="${reason}"} ${n}`)
    }
    lines.push(
      '# HELP portcullis_denylist_entries Revocation entries held in memory.',
      '# TYPE portcullis_denylist_entries gauge',
      `portcullis_denylist_entries ${opts.denylist.size}`,
      '# HELP portcullis_verify_cache_entries Verified tokens cached.',
      '# TYPE portcullis_verify_cache_entries gauge',
      `portcullis_verify_cache_entries ${opts.verifier().cacheSize}`,
      '# HELP portcullis_ready 1 when the gateway is ready (revocations current).',
      '# TYPE portcullis_ready gauge',
      `portcullis_ready ${opts.ready() ? 1 : 0}`,
      '# HELP portcullis_start_time_seconds Start time of the process.',
      '# TYPE portcullis_start_time_seconds gauge',
      `portcullis_start_time_seconds ${startedAtSec}`
    )
    reply.type('text/plain; version=0.0.4; charset=utf-8').send(lines.join('\n') + '\n')
  })
}, { name: 'portcullis-metrics', fastify: '5.x' })
