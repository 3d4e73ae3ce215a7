import t from 'tap'
import { spawnSync } from 'node:child_process'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { telemetryHub } from '../../src/telemetry/hub.js'
import type { RecordingUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, raw, signWith } from '../fixtures/gateway.js'
import { key, newTraceparent, parseTraceparent, setup, start, traced } from '../fixtures/tracing.js'
import { ROOT } from '../fixtures/process.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

const SERVER = 2
const CLIENT = 3
const ERROR = 2
const ORDERS = (upstream: RecordingUpstream, extra: Record<string, unknown> = {}): unknown => ({ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required', ...extra })

t.test('a client traceparent: the request span is its child, and the upstream gets the same trace with the gateway\'s upstream span as parent', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [ORDERS(upstream)]))
  const token = signWith(key, goodClaims())
  const client = newTraceparent()
  const res = await raw(gw.url, '/api/orders/7?api_key=query-secret-value', {
    headers: { authorization: `Bearer ${token}`, cookie: 'session=cookie-secret-value', traceparent: client.header, tracestate: 'vendor=opaque', 'x-request-id': 'trace-req-1' },
  })
  t.equal(res.status, 200)
  const sent = upstream.requests[0]!
  const upstreamParent = parseTraceparent(sent.headers.traceparent)
  t.equal(upstreamParent.traceId, client.traceId, 'the upstream continues the client\'s trace')
  t.not(upstreamParent.spanId, client.spanId, 'with a new parent span: the gateway\'s')
  t.equal(upstreamParent.flags, '01')
  t.equal(sent.rawHeaders.filter(h => h.toLowerCase() === 'traceparent').length, 1, 'one traceparent, the client\'s replaced')
  t.equal(sent.headers.tracestate, 'vendor=opaque', 'tracestate passes unchanged')

  const spans = await receiver.waitForSpans(2)
  const server = spans.find(s => s.kind === SERVER)!
  const upstreamSpan = spans.find(s => s.kind === CLIENT)!
  t.match(server, {
    traceId: client.traceId,
    parentSpanId: client.spanId,
    name: 'GET orders',
    traceState: 'vendor=opaque',
    attributes: {
      'portcullis.route': 'orders',
      'http.request.method': 'GET',
      'http.response.status_code': 200,
      'portcullis.decision.granted': true,
      'portcullis.decision.reason': 'granted',
      'portcullis.request_id': 'trace-req-1',
    },
    resource: { 'service.name': 'portcullis-test' },
  })
  t.match(upstreamSpan, {
    traceId: client.traceId,
    spanId: upstreamParent.spanId,
    parentSpanId: server.spanId,
    name: 'GET',
    attributes: { 'http.request.method': 'GET', 'http.response.status_code': 200, 'server.address': '127.0.0.1', 'server.port': upstream.port, 'portcullis.route': 'orders' },
    status: { code: 0 },
  })
  t.ok(BigInt(server.startTimeUnixNano) <= BigInt(upstreamSpan.startTimeUnixNano) && BigInt(upstreamSpan.endTimeUnixNano) <= BigInt(server.endTimeUnixNano), 'the upstream span lies within the request span')

  const exported = Buffer.concat(receiver.posts.map(p => p.body)).toString('utf8')
  for (const secret of [token, token.split('.')[2]!, 'cookie-secret-value', 'query-secret-value', 'api_key', 'Bearer']) {
    t.notOk(exported.includes(secret), `exported bytes never contain ${secret.slice(0, 16)}…`)
  }
  t.equal(receiver.posts[0]!.headers['content-type'], 'application/json', 'OTLP/HTTP with JSON bodies')
  t.equal(telemetryHub(gw.gateway.app).inflight, 0, 'nothing left in the correlation map')
})

t.test('without a client traceparent the gateway starts the trace, and a client\'s tracestate (of no trace) is dropped', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public' })]))
  await raw(gw.url, '/api/x', { headers: { tracestate: 'vendor=orphan', traceparent: '00-zzzz-not-valid-01' } })
  const sent = upstream.requests[0]!
  const parent = parseTraceparent(sent.headers.traceparent)
  t.equal(sent.headers.tracestate, undefined, 'tracestate without a valid traceparent is not forwarded')
  const spans = await receiver.waitForSpans(2)
  const server = spans.find(s => s.kind === SERVER)!
  t.equal(server.parentSpanId, '', 'a root span')
  t.equal(server.traceId, parent.traceId)
  t.equal(spans.find(s => s.kind === CLIENT)!.spanId, parent.spanId)
  t.match(server.attributes, { 'portcullis.decision.granted': true, 'portcullis.decision.reason': 'public' })
})

t.test('a refused request has its span with the decision and reason, and no upstream span', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [ORDERS(upstream)]))
  const client = newTraceparent()
  const res = await raw(gw.url, '/api/x', { headers: { traceparent: client.header } })
  t.equal(res.status, 401)
  const expired = signWith(key, goodClaims({ exp: Math.floor(Date.now() / 1000) - 600, iat: Math.floor(Date.now() / 1000) - 1200 }))
  t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${expired}` } })).status, 401)
  t.equal((await raw(gw.url, '/nowhere')).status, 404)
  await gw.close() // flushes
  const spans = receiver.spans
  t.equal(spans.length, 3)
  t.notOk(spans.some(s => s.kind === CLIENT), 'nothing went upstream')
  t.equal(upstream.requests.length, 0)
  t.match(spans.find(s => s.traceId === client.traceId), { parentSpanId: client.spanId, attributes: { 'portcullis.decision.granted': false, 'portcullis.decision.reason': 'missing_token', 'http.response.status_code': 401 }, status: { code: 0 } })
  t.ok(spans.some(s => s.attributes['portcullis.decision.reason'] === 'token_expired'))
  t.match(spans.find(s => s.attributes['http.response.status_code'] === 404), { name: 'GET', attributes: { 'portcullis.route': '', 'portcullis.decision.reason': 'route_not_found' } })
  t.notOk(Buffer.concat(receiver.posts.map(p => p.body)).toString().includes(expired.split('.')[2]!), 'no token in the export')
})

t.test('an upstream that refuses the connection: the upstream span has the error, the request span is a 502 error', async (t) => {
  const { upstream, receiver } = await setup(t)
  const port = upstream.port
  await upstream.close()
  const gw = await start(t, traced(receiver, [{ name: 'gone', prefix: '/gone', upstream: `http://127.0.0.1:${port}`, auth: 'public' }]))
  t.equal((await raw(gw.url, '/gone/x')).status, 502)
  await gw.close()
  const server = receiver.spans.find(s => s.kind === SERVER)!
  const client = receiver.spans.find(s => s.kind === CLIENT)!
  t.match(server, { attributes: { 'http.response.status_code': 502, 'portcullis.decision.reason': 'upstream_unavailable' }, status: { code: ERROR } })
  t.match(client, { parentSpanId: server.spanId, attributes: { 'error.type': 'ECONNREFUSED' }, status: { code: ERROR, message: 'ECONNREFUSED' } })
})

t.test('parent-based sampling behind a trusted proxy: its sampled flag is followed; without one, sampleRatio decides — and the upstream is told either way', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public' })], { sampleRatio: 0 }, { server: { trustProxy: ['127.0.0.1'] } }))
  await raw(gw.url, '/api/unsampled', { headers: { tracestate: 'vendor=orphan' } })
  const sampledByClient = newTraceparent(true)
  await raw(gw.url, '/api/sampled', { headers: { traceparent: sampledByClient.header } })
  const notSampledByClient = newTraceparent(false)
  await raw(gw.url, '/api/declined', { headers: { traceparent: notSampledByClient.header } })
  await gw.close()
  const byPath = Object.fromEntries(upstream.requests.map(r => [r.url, parseTraceparent(r.headers.traceparent)]))
  t.equal(byPath['/api/unsampled']!.flags, '00', 'ratio 0: not sampled, still propagated')
  t.equal(byPath['/api/sampled']!.flags, '01')
  t.equal(byPath['/api/sampled']!.traceId, sampledByClient.traceId)
  t.equal(byPath['/api/declined']!.flags, '00')
  t.equal(byPath['/api/declined']!.traceId, notSampledByClient.traceId)
  t.equal(upstream.requests.find(r => r.url === '/api/declined')!.headers.traceparent, notSampledByClient.header, 'the gateway recorded nothing: the client\'s span stays the upstream\'s parent')
  t.equal(upstream.requests.find(r => r.url === '/api/unsampled')!.headers.tracestate, undefined, 'a trace started here carries no client tracestate')
  t.same([...new Set(receiver.spans.map(s => s.traceId))], [sampledByClient.traceId], 'only the sampled trace is exported')
  t.equal(receiver.spans.length, 2)
})

t.test('requests queued behind a busy pool: each upstream span belongs to its own request (no async-context mix-up)', async (t) => {
  const { upstream, receiver } = await setup(t, (req, res) => { setTimeout(() => res.end(req.url), 60) })
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public', connections: 1 })]))
  const clients = [newTraceparent(), newTraceparent(), newTraceparent()]
  await Promise.all(clients.map((c, i) => raw(gw.url, `/api/${i}`, { headers: { traceparent: c.header } })))
  await gw.close()
  t.equal(upstream.requests.length, 3)
  for (const sent of upstream.requests) {
    const i = Number(sent.url.split('/')[2])
    const parent = parseTraceparent(sent.headers.traceparent)
    t.equal(parent.traceId, clients[i]!.traceId, `request ${i} upstream in its own trace`)
    const span = receiver.spans.find(s => s.spanId === parent.spanId)!
    const server = receiver.spans.find(s => s.spanId === span.parentSpanId)!
    t.equal(server.parentSpanId, clients[i]!.spanId, `request ${i}: upstream span under its own request span`)
  }
})

t.test('two requests in flight with the same client x-request-id: neither upstream call is attributed to the other', async (t) => {
  const { upstream, receiver } = await setup(t, (req, res) => { setTimeout(() => res.end(req.url), 40) })
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public' })]))
  const clients = { '/api/a': newTraceparent(), '/api/b': newTraceparent(), '/api/c': newTraceparent() }
  await Promise.all(Object.entries(clients).map(([path, c]) => raw(gw.url, path, { headers: { traceparent: c.header, 'x-request-id': 'same-id' } })))
  await gw.close()
  t.equal(upstream.requests.length, 3)
  // the first may have gone upstream before the others arrived (then it is unambiguous and
  // gets its upstream span); the later ones cannot be told apart: each goes up with its own
  // client's trace ids rewritten by the gateway (fix-trace-headers-passed-raw), never another request's
  let rewritten = 0
  for (const sent of upstream.requests) {
    const client = clients[sent.url as keyof typeof clients]
    const parent = parseTraceparent(sent.headers.traceparent)
    t.equal(parent.traceId, client.traceId, `${sent.url} upstream in its own trace`)
    if (parent.spanId === client.spanId) continue
    rewritten++
    const span = receiver.spans.find(s => s.spanId === parent.spanId)!
    t.equal(receiver.spans.find(s => s.spanId === span.parentSpanId)!.parentSpanId, client.spanId, `${sent.url}: its upstream span under its own request span`)
  }
  t.ok(rewritten <= 1, 'at most the first, unambiguous one got a span of the gateway')
  t.equal(receiver.spans.filter(s => s.kind === CLIENT).length, rewritten)
  t.equal(receiver.spans.filter(s => s.kind === SERVER).length, 3, 'every request is traced')
  t.equal(telemetryHub(gw.gateway.app).inflight, 0)
})

t.test('spans still queued are sent when the gateway closes', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public' })]), 60_000)
  await raw(gw.url, '/api/x')
  t.equal(receiver.spans.length, 0, 'nothing sent yet: the batch waits')
  await gw.close()
  t.equal(receiver.spans.length, 2, 'request and upstream span flushed on close')
})

t.test('a collector that is away: requests are served as usual, the spans are dropped with one warning', async (t) => {
  const { upstream, receiver } = await setup(t)
  await receiver.close()
  let log = ''
  const sink = new Writable({ write (chunk, _enc, cb) { log += String(chunk); cb() } })
  const gw = await start(t, traced(receiver, [ORDERS(upstream, { auth: 'public' })], { timeout: '500ms' }), 20, pino({ level: 'warn' }, sink))
  for (let i = 0; i < 3; i++) t.equal((await raw(gw.url, `/api/${i}`)).status, 200)
  await gw.close()
  const warnings = log.trim().split('\n').filter(l => l !== '').map(l => JSON.parse(l)).filter(l => l.msg.startsWith('trace export'))
  t.equal(warnings.length, 1, 'one warning, not one per batch')
  t.match(warnings[0], { level: 40, msg: 'trace export to the OTLP endpoint failed; spans dropped' })
  t.ok(warnings[0].droppedSpans >= 2)
})

t.test('off (no telemetry.otlp): nothing registered, no traceparent added, a client\'s passes untouched, nothing exported', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, baseConfig(key, [ORDERS(upstream, { auth: 'public' })]))
  t.equal(telemetryHub(gw.gateway.app).observers, 1, 'only the metrics observe requests')
  await raw(gw.url, '/api/plain')
  const client = newTraceparent()
  await raw(gw.url, '/api/traced', { headers: { traceparent: client.header, tracestate: 'vendor=x' } })
  await gw.close()
  const byPath = Object.fromEntries(upstream.requests.map(r => [r.url, r.headers]))
  t.equal(byPath['/api/plain']!.traceparent, undefined, 'no traceparent invented')
  t.equal(byPath['/api/traced']!.traceparent, client.header, 'an ordinary header, passed as it came')
  t.equal(byPath['/api/traced']!.tracestate, 'vendor=x')
  t.equal(receiver.posts.length, 0)
})

t.test('off: no OpenTelemetry module is even loaded (its ~4 MiB would sit in the heap every GC walks); on: the SDK and the exporter are', async (t) => {
  const loaded = (args: string[]): string[] => {
    const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/fixtures/loaded-packages.ts', ...args], { cwd: ROOT, encoding: 'utf8', timeout: PROCESS_WAIT_MS })
    t.equal(r.status, 0, r.stderr.slice(0, 500))
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '[]') as string[]
  }
  t.same(loaded([]), [], 'tracing off')
  const on = loaded(['otlp'])
  for (const pkg of ['@opentelemetry/api', '@opentelemetry/sdk-trace', '@opentelemetry/exporter-trace-otlp-http']) t.ok(on.includes(pkg), `tracing on loads ${pkg}`)
})
