/**
 * Micro-benchmark of the per-request telemetry work, without HTTP: what the metrics (and the
 * tracing, when it is on) add to one proxied request, in ns of CPU. Each request is simulated
 * as the gateway lives it — a new request object, the proxy's upstream timing reports (three
 * clock reads, two histogram observes: src/proxy/exchange.ts), with tracing the telemetry
 * hub's preHandler work and undici's `undici:request:create | headers | trailers` published
 * on the real diagnostics channels with a request whose headers look like the rewriter's,
 * then the onResponse work — and a baseline loop that only builds those objects is subtracted. Not measured here: Fastify
 * calling the hooks themselves (the full `npm run bench` sees that).
 *
 *   node --import tsx bench/micro-metrics.ts [--requests 200000] [--rounds 5]
 *
 * CPU time by process.cpuUsage() over whole rounds, so the garbage collection a variant
 * causes and the span export it schedules (batched, serialized to OTLP/JSON) are counted.
 */
import diagnostics from 'node:diagnostics_channel'
import { randomUUID } from 'node:crypto'
import { parseArgs } from 'node:util'
import Fastify, { type FastifyRequest } from 'fastify'
import { Counter, Histogram, Registry } from 'prom-client'
import { ExportResultCode, type ExportResult } from '@opentelemetry/core'
import { AlwaysOnSampler, BatchSpanProcessor, TracerProvider, type ReadableSpan, type SpanExporter } from '@opentelemetry/sdk-trace'
import { JsonTraceSerializer } from '@opentelemetry/otlp-transformer'
import { GatewayMetrics, LATENCY_BUCKETS_SEC } from '../src/metrics/gateway-metrics.js'
import { metricsObserver } from '../plugins/metrics.js'
import { TelemetryHub } from '../src/telemetry/hub.js'
import { RequestTracing } from '../src/telemetry/tracing.js'

const { values: args } = parseArgs({ options: { requests: { type: 'string', default: '200000' }, rounds: { type: 'string', default: '5' } } })
const REQUESTS = Number(args.requests)
const ROUNDS = Number(args.rounds)
const CHUNK = 256 // requests between yields, so batched span exports run as they would

const ROUTES = ['orders', 'catalog', 'users', 'admin']
const create = diagnostics.channel('undici:request:create')
const headers = diagnostics.channel('undici:request:headers')
const trailers = diagnostics.channel('undici:request:trailers')

interface FakeUndici { origin: string, method: string, path: string, headers: string[], addHeader: (n: string, v: string) => FakeUndici }

/** a request as the hooks see it: a new object each time, with the decorations the gateway sets */
function fakeRequest (i: number): FastifyRequest {
  return {
    id: randomIds[i % randomIds.length],
    method: 'GET',
    url: '/api/orders/1',
    headers: { host: 'gw', 'user-agent': 'wrk', accept: '*/*', authorization: 'Bearer x' },
    auth: { route: ROUTES[i & 3], granted: true, reason: 'granted', token: undefined, sub: 'alice' },
    acceptedAt: performance.now(),
    passed: {},
    raw: {},
  } as unknown as FastifyRequest
}

function fakeUndici (id: string): FakeUndici {
  return {
    origin: 'http://127.0.0.1:4001',
    method: 'GET',
    path: '/orders/1',
    headers: ['user-agent', 'wrk', 'accept', '*/*', 'x-forwarded-for', '127.0.0.1', 'x-forwarded-proto', 'http', 'x-forwarded-host', 'gw', 'host', '127.0.0.1:4001', 'x-request-id', id, 'x-user-id', 'alice', 'x-user-scopes', 'orders:read'],
    addHeader (n, v) { this.headers.push(n, v); return this },
  }
}

const randomIds = Array.from({ length: 4096 }, () => randomUUID())
const RESPONSE = { statusCode: 200, headers: [], statusText: 'OK' }

type Step = (i: number) => void

async function cpuNs (step: Step): Promise<number> {
  const start = process.cpuUsage()
  for (let i = 0; i < REQUESTS; i += CHUNK) {
    for (let j = i; j < i + CHUNK; j++) step(j)
    await new Promise(resolve => setImmediate(resolve))
  }
  const used = process.cpuUsage(start)
  return (used.user + used.system) * 1000 / REQUESTS
}

/** the proxy's reports of one upstream call (src/proxy/exchange.ts: UpstreamTiming) */
function upstreamTiming (m: GatewayMetrics, route: string): void {
  const sentAt = performance.now()
  m.upstreamHeaders(route, (performance.now() - sentAt) / 1000)
  m.upstreamDone(route, (performance.now() - sentAt) / 1000)
}

/** one proxied request through the hub (tracing on): preHandler, undici's three events, the proxy's timing, onResponse */
function proxied (hub: TelemetryHub, m: GatewayMetrics): Step {
  return (i) => {
    const request = fakeRequest(i)
    hub.track(request)
    const u = fakeUndici(request.id)
    create.publish({ request: u })
    headers.publish({ request: u, response: RESPONSE })
    upstreamTiming(m, request.auth.route)
    trailers.publish({ request: u, trailers: [] })
    hub.finish(request, 200, false)
  }
}

class SerializingExporter implements SpanExporter {
  bytes = 0
  export (spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.bytes += JsonTraceSerializer.serializeRequest(spans)?.length ?? 0
    done({ code: ExportResultCode.SUCCESS })
  }

  async shutdown (): Promise<void> {}
}

function tracer (): { provider: TracerProvider, exporter: SerializingExporter } {
  const exporter = new SerializingExporter()
  const provider = new TracerProvider({
    sampler: new AlwaysOnSampler(), // as src/telemetry/provider.ts: RequestTracing decides
    spanProcessors: [new BatchSpanProcessor({ exporter, scheduledDelayMillis: 5, maxQueueSize: 2048, maxExportBatchSize: 512 })],
  })
  return { provider, exporter }
}

async function hubWith (observers: Array<Parameters<TelemetryHub['add']>[0]>): Promise<{ hub: TelemetryHub, close: () => Promise<void> }> {
  const app = Fastify()
  const hub = new TelemetryHub(app)
  for (const o of observers) hub.add(o)
  await app.ready()
  return { hub, close: () => app.close() }
}

// ——— the variants ———

const baseline: Step = (i) => { const r = fakeRequest(i); fakeUndici(r.id) }

// what the brief suggested: prom-client children cached per label set
const registry = new Registry()
const promHistogram = new Histogram({ name: 'h', help: 'h', labelNames: ['route', 'status_class'], buckets: [...LATENCY_BUCKETS_SEC], registers: [registry] })
const promCounter = new Counter({ name: 'c', help: 'c', labelNames: ['route', 'status', 'reason'], registers: [registry] })
const promCells = ROUTES.map(r => ({ h: promHistogram.labels(r, '2xx'), c: promCounter.labels(r, '200', 'granted') }))
const promChildren: Step = (i) => {
  const r = fakeRequest(i)
  fakeUndici(r.id)
  const cells = promCells[i & 3]!
  cells.h.observe((performance.now() - r.acceptedAt) / 1000)
  cells.c.inc()
}

const metrics = new GatewayMetrics({ defaultMetrics: false })
const observer = metricsObserver(metrics)
const requestOnly: Step = (i) => {
  const r = fakeRequest(i)
  fakeUndici(r.id)
  observer.requestDone!(r, 200, false, performance.now())
}
// tracing off: the hub has only the onResponse observers, no channel subscriber
const proxiedMetrics: Step = (i) => {
  const r = fakeRequest(i)
  fakeUndici(r.id)
  upstreamTiming(metrics, r.auth.route)
  observer.requestDone!(r, 200, false, performance.now())
}

const rows: Array<[string, number[]]> = [
  ['prom-client children (histogram observe + counter inc), for comparison', []],
  ['metrics: request duration + requests_total (the onResponse work)', []],
  ['metrics, whole proxied request: upstream headers/duration (reported by the proxy) + request metrics', []],
  ['metrics + tracing on, sampleRatio 1 (2 spans, OTLP/JSON serialization)', []],
  ['metrics + tracing on, sampleRatio 0 (ids and traceparent only)', []],
]
const base: number[] = []
let exportedBytes = 0
for (let round = 0; round < ROUNDS; round++) {
  base.push(await cpuNs(baseline))
  rows[0]![1].push(await cpuNs(promChildren))
  rows[1]![1].push(await cpuNs(requestOnly))
  rows[2]![1].push(await cpuNs(proxiedMetrics))
  for (const [row, ratio] of [[3, 1], [4, 0]] as const) {
    // the channel subscribers are process-wide: one hub subscribed at a time
    const { provider, exporter } = tracer()
    const m = new GatewayMetrics({ defaultMetrics: false })
    const { hub, close } = await hubWith([new RequestTracing(provider.getTracer('bench'), ratio, () => false), metricsObserver(m)])
    rows[row]![1].push(await cpuNs(proxied(hub, m)))
    await provider.shutdown()
    await close()
    if (ratio === 1) exportedBytes = exporter.bytes
  }
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const baseNs = median(base)
const out = [
  `${REQUESTS.toLocaleString('en')} simulated requests × ${ROUNDS} rounds, median; baseline (building the request objects) ${baseNs.toFixed(0)} ns subtracted`,
  '',
  '| per request | ns (CPU) | of ~70 µs/request* |',
  '|---|---:|---:|',
  ...rows.map(([name, xs]) => {
    const ns = median(xs) - baseNs
    return `| ${name} | ${ns.toFixed(0)} | ${(ns / 70_000 * 100).toFixed(2)} % |`
  }),
  '| tracing off | 0 (nothing registered: no observer, hook or subscriber of its own) | 0 % |',
  '',
  `*portcullis-EdDSA ≈ 65–80 µs CPU per proxied request in bench/README.md (2026-11-30). OTLP/JSON: ${Math.round(exportedBytes / (REQUESTS * 2))} bytes per span.`,
]
process.stdout.write(out.join('\n') + '\n')
