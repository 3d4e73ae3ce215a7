import fp from 'fastify-plugin'
import type { GatewayConfig } from '../src/config/types.js'
import type { TrustFunction } from '../src/pipeline/trust.js'
import { telemetryHub } from '../src/telemetry/hub.js'

export interface TracingOptions {
  /** `telemetry.otlp`; undefined: tracing is off and this plugin adds nothing */
  otlp: GatewayConfig['telemetry']['otlp']
  /** how long finished spans wait to be sent together, ms (default 5000; tests shorten it) */
  exportDelayMs?: number
  /** server.trustProxy's decision: only these peers' sampled flags are followed */
  trust: TrustFunction
}

/**
 * OpenTelemetry traces of the public listener (src/telemetry/tracing.ts), exported over
 * OTLP/HTTP. Off by default, and then free: without `telemetry.otlp` no hook, no
 * diagnostics-channel subscriber, no tracer and no OpenTelemetry module exist, and a
 * client's `traceparent` reaches the upstream as any other header. Finished spans still
 * queued are sent when the app closes.
 */
export default fp(async function tracing (app, opts: TracingOptions) {
  if (opts.otlp === undefined) return
  // loaded only when tracing is on: OpenTelemetry's SDK and exporter are ~4 MiB of heap that
  // every major GC would otherwise walk in a gateway that never traces
  const [{ createTracerProvider }, { RequestTracing }] = await Promise.all([
    import('../src/telemetry/provider.js'),
    import('../src/telemetry/tracing.js'),
  ])
  const provider = createTracerProvider(opts.otlp, app.log, { exportDelayMs: opts.exportDelayMs })
  telemetryHub(app).add(new RequestTracing(provider.getTracer('portcullis'), opts.otlp.sampleRatio, opts.trust))
  // after in-flight requests ended their spans (onClose runs once the server stopped); bounded by telemetry.otlp.timeout
  app.addHook('onClose', async () => { await provider.shutdown() })
}, { name: 'portcullis-tracing', fastify: '5.x', dependencies: ['portcullis-edge'] })
