import fp from 'fastify-plugin'
import type { FastifyInstance } from 'fastify'
import { Reason } from '../src/pipeline/auth-state.js'
import { GatewayMetrics, type MetricsSources } from '../src/metrics/gateway-metrics.js'
import { telemetryHub, type RequestObserver } from '../src/telemetry/hub.js'

export interface MetricsOptions extends MetricsSources {
  /** the public listener whose requests are measured */
  gateway: FastifyInstance
  /** the gateway's metrics (reloads and security events report to it); default: a new set */
  metrics?: GatewayMetrics
}

/**
 * GET /metrics on the admin listener (Prometheus text, prom-client's registry). Requests of
 * the public listener are measured through the telemetry hub (src/telemetry/hub.ts): once in
 * its onResponse hook (a duration histogram observe and a counter increment, cells cached per
 * route); their upstream calls are reported by the proxy itself (UpstreamTiming in
 * src/proxy/exchange.ts, wired in app.ts). Figures other
 * components keep (verify cache, denylist, key sets, revocation feed…) are read when scraped.
 */
export default fp(async function metrics (admin, opts: MetricsOptions) {
  const { gateway, metrics: given, ...sources } = opts
  const metrics = given ?? new GatewayMetrics()
  metrics.watch(sources)
  telemetryHub(gateway).add(metricsObserver(metrics))

  admin.get('/metrics', async (_request, reply) => {
    const text = await metrics.text()
    reply.type(metrics.contentType).send(text)
  })
}, { name: 'portcullis-metrics', fastify: '5.x' })

/** what the metrics take from each request (upstream calls: UpstreamTiming, reported by the proxy) */
export function metricsObserver (metrics: GatewayMetrics): RequestObserver {
  return {
    requestDone (request, status, aborted, nowMs) {
      const auth = request.auth
      const acceptedAt = request.acceptedAt
      // acceptedAt is 0 when the request was refused before the edge hook ran (an undecodable URL)
      const durationSec = acceptedAt > 0 ? (nowMs - acceptedAt) / 1000 : 0
      const reason = aborted ? Reason.clientClosed : auth?.reason ?? 'unrouted'
      metrics.requestDone(auth?.route ?? '', status, reason, durationSec)
    },
  }
}
