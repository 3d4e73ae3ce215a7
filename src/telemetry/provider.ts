import { ExportResultCode, type ExportResult } from '@opentelemetry/core'
import { OTLPTraceExporter } from '@opentelemetry/exporter-trace-otlp-http'
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources'
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace'
import type { GatewayConfig } from '../config/types.js'

export type OtlpSettings = NonNullable<GatewayConfig['telemetry']['otlp']>

/** the OTel defaults, kept: finished spans wait this long to be sent in one post */
export const DEFAULT_EXPORT_DELAY_MS = 5000
/** spans waiting beyond this are dropped (bounded memory while the collector is away) */
const MAX_QUEUED_SPANS = 2048
const MAX_SPANS_PER_POST = 512
/** a collector that stays away is reported this often, not once per batch */
const REPORT_INTERVAL_MS = 60_000

export interface ExportLogger {
  warn: (obj: object, msg: string) => void
}

/**
 * The tracer provider for `telemetry.otlp`: OTLP/HTTP with JSON bodies (the exporter's
 * default) to `<endpoint>/v1/traces`, batched. It records every span it is asked for: the
 * sampling decision (parent-based, `sampleRatio` for new traces) is taken before, in
 * src/telemetry/tracing.ts, so an unsampled request never reaches OpenTelemetry.
 * It is not registered as the global provider: the gateway passes its tracer explicitly, so
 * nothing else in the process changes, and two gateways in one process (tests) do not meet.
 * Built from `@opentelemetry/sdk-trace` rather than the `-base` shim, which reads OTEL_*
 * environment variables (config is read by the loader only); the exporter itself still honours
 * OTEL_EXPORTER_OTLP_HEADERS, which is how a collector's credentials can be given.
 */
export function createTracerProvider (otlp: OtlpSettings, logger: ExportLogger, options: { exportDelayMs?: number } = {}): TracerProvider {
  const exporter = new ReportingExporter(new OTLPTraceExporter({ url: `${otlp.endpoint}/v1/traces`, timeoutMillis: otlp.timeoutMs }), logger)
  return new TracerProvider({
    resource: defaultResource().merge(resourceFromAttributes({ 'service.name': otlp.serviceName })),
    sampler: new AlwaysOnSampler(),
    spanProcessors: [new BatchSpanProcessor({
      exporter,
      scheduledDelayMillis: options.exportDelayMs ?? DEFAULT_EXPORT_DELAY_MS,
      exportTimeoutMillis: otlp.timeoutMs,
      maxQueueSize: MAX_QUEUED_SPANS,
      maxExportBatchSize: MAX_SPANS_PER_POST,
    })],
  })
}

/**
 * The OTLP exporter reports failures only to OTel's global diagnostic logger (silent unless
 * registered, and process-wide): this says it in the gateway's log, at most once a minute.
 */
class ReportingExporter implements SpanExporter {
  readonly #inner: SpanExporter
  readonly #logger: ExportLogger
  #failed = 0
  #reportedAt = -Infinity

  constructor (inner: SpanExporter, logger: ExportLogger) {
    this.#inner = inner
    this.#logger = logger
  }

  export (spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.#inner.export(spans, (result) => {
      if (result.code !== ExportResultCode.SUCCESS) this.#report(spans.length, result.error)
      done(result)
    })
  }

  #report (spans: number, error: Error | undefined): void {
    this.#failed += spans
    const now = performance.now()
    if (now - this.#reportedAt < REPORT_INTERVAL_MS) return
    this.#reportedAt = now
    this.#logger.warn({ droppedSpans: this.#failed, err: error?.message }, 'trace export to the OTLP endpoint failed; spans dropped')
    this.#failed = 0
  }

  shutdown (): Promise<void> { return this.#inner.shutdown() }

  forceFlush (): Promise<void> { return this.#inner.forceFlush?.() ?? Promise.resolve() }
}
