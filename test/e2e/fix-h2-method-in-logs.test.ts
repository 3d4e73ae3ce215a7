import t from 'tap'
import { connect } from 'node:http2'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { raw } from '../fixtures/gateway.js'
import { h2Request } from '../fixtures/h2-client.js'
import { testCertificate } from '../fixtures/tls.js'
import { setup, start, traced } from '../fixtures/tracing.js'
import { until } from '../fixtures/until.js'

// fix-h2-method-in-logs (found by a hostile review, finding 6): over HTTP/2 `:method` is any
// token the client chooses, at any length. An 8,000-character method was a 405 — nothing went
// upstream — but wrote an 8,231-character decision line and exported a span named with the
// 8 KB method; 300 made-up methods made 301 distinct span names, a cardinality in the trace
// backend of the client's choosing. Now the decision line names the method sent cut to 32
// characters, and spans follow the OpenTelemetry HTTP semantic conventions: a method not known
// is `_OTHER` in `http.request.method`, `HTTP` in the span name, and the original (capped) in
// `http.request.method_original`. Real HTTP/2 over TLS, real OTLP/HTTP receiver.

const SERVER = 2
const MAX_METHOD_CHARS = 32
const LONG = 'M'.repeat(8000)
/** a decision line with a 32-character method, a UUID request id, route, path and timings */
const MAX_LINE_CHARS = 400

interface Decision { msg: string, method: string, status: number, route: string | null, path: string }

t.test('over HTTP/2, a long or made-up method leaves a bounded decision line and one span name', async (t) => {
  const cert = testCertificate(t)
  const { upstream, receiver } = await setup(t)
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (c, _e, cb) { out += String(c); cb() } }))
  const gw = await start(t, traced(receiver, [{ name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' }], { sampleRatio: 1 },
    { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true }, logging: { level: 'info', decisions: true } }), 50, logger)
  const session = connect(`https://127.0.0.1:${new URL(gw.url).port}`, { ca: cert.certPem, servername: 'localhost' })
  t.teardown(() => session.close())

  const made = Array.from({ length: 300 }, (_, i) => `X${i.toString(36)}Y`)
  // method, path, expected status, span name, span method attributes
  const table: Array<[string, string, number, string, Record<string, string | undefined>]> = [
    ['GET', '/pub/x', 200, 'GET pub', { 'http.request.method': 'GET', 'http.request.method_original': undefined }],
    [LONG, '/pub/x', 405, 'HTTP pub', { 'http.request.method': '_OTHER', 'http.request.method_original': LONG.slice(0, MAX_METHOD_CHARS) }],
    [LONG, '/nowhere', 404, 'HTTP', { 'http.request.method': '_OTHER', 'http.request.method_original': LONG.slice(0, MAX_METHOD_CHARS) }],
    ['get', '/pub/x', 405, 'HTTP pub', { 'http.request.method': '_OTHER', 'http.request.method_original': 'get' }],
    ['PROPFIND', '/pub/x', 405, 'HTTP pub', { 'http.request.method': '_OTHER', 'http.request.method_original': 'PROPFIND' }],
    ...made.map((m): [string, string, number, string, Record<string, string | undefined>] =>
      [m, '/pub/x', 405, 'HTTP pub', { 'http.request.method': '_OTHER', 'http.request.method_original': m }]),
  ]
  for (const [method, path, status] of table) {
    t.equal((await h2Request(session, { ':method': method, ':path': path })).status, status, `${method.slice(0, 40)} ${path}: ${status}`)
  }
  t.equal(upstream.requests.length, 1, 'only the GET went upstream')
  await gw.close() // flushes the spans and the decision lines

  const lines = out.trim().split('\n').filter(Boolean)
  const decisions = lines.map(l => JSON.parse(l) as Decision).filter(l => l.msg === 'decision')
  t.equal(decisions.length, table.length, 'one decision line per request')
  const longest = Math.max(...lines.map(l => l.length))
  t.ok(longest <= MAX_LINE_CHARS, `every log line bounded (longest ${longest} chars)`)
  const servers = receiver.spans.filter(s => s.kind === SERVER)
  t.equal(servers.length, table.length, 'one server span per request')
  t.same([...new Set(receiver.spans.map(s => s.name))].sort(), ['GET', 'GET pub', 'HTTP', 'HTTP pub'], 'span names: the known methods and HTTP, whatever the client sent')

  for (const [method, path, status, name, attributes] of table) {
    const label = `${method.slice(0, 40)} ${path}`
    const capped = method.slice(0, MAX_METHOD_CHARS)
    const line = decisions.find(d => d.method === capped && d.path === path)
    t.match(line, { status }, `${label}: its decision line names the method sent, cut to ${MAX_METHOD_CHARS} characters`)
    const span = servers.find(s => s.attributes['http.request.method_original'] === attributes['http.request.method_original'] &&
      s.attributes['http.request.method'] === attributes['http.request.method'] && s.attributes['http.response.status_code'] === status)
    t.equal(span?.name, name, `${label}: span ${name}`)
  }
  t.notOk(out.includes('M'.repeat(MAX_METHOD_CHARS + 1)), 'the long method is nowhere in the log')
  t.notOk(receiver.posts.some(p => p.body.includes('M'.repeat(MAX_METHOD_CHARS + 1))), 'nor in what was exported')
})

t.test('over HTTP/1.1 the decision line names the method as before (a control)', async (t) => {
  const { upstream, receiver } = await setup(t)
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (c, _e, cb) { out += String(c); cb() } }))
  const gw = await start(t, traced(receiver, [{ name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' }], { sampleRatio: 1 },
    { logging: { level: 'info', decisions: true } }), 50, logger)
  t.equal((await raw(gw.url, '/pub/x', { method: 'DELETE' })).status, 200)
  await until('the decision line written', () => out.includes('"msg":"decision"'))
  await gw.close()
  t.match(JSON.parse(out.trim().split('\n').find(l => l.includes('"msg":"decision"'))!), { method: 'DELETE', route: 'pub', status: 200 })
  t.same(receiver.spans.map(s => s.name).sort(), ['DELETE', 'DELETE pub'])
})
