import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { createServer, request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import type { AddressInfo } from 'node:net'
import Fastify from 'fastify'
import { WebSocket, WebSocketServer } from 'ws'
import { stringify } from 'yaml'
import { pino } from 'pino'
import { loadConfigText } from '../../src/config/load.js'
import { buildGateway, type Gateway } from '../../src/app.js'
import { listen } from '../../src/server.js'
import { GatewayMetrics, type FeedFigures } from '../../src/metrics/gateway-metrics.js'
import { telemetryHub } from '../../src/telemetry/hub.js'
import metricsPlugin from '../../plugins/metrics.js'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, PUBLIC_SCHEME, raw, signWith, startGateway } from '../fixtures/gateway.js'

// ——— a strict reader of the Prometheus text format (0.0.4), so a malformed line fails the test ———

interface Sample { name: string, labels: Record<string, string>, value: number }
interface Family { name: string, type: string, help: string, samples: Sample[] }

// values as Prometheus reads them (Go's ParseFloat: Inf and NaN in any case — prom-client writes `Nan`)
const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? ([+-]?(?:[0-9]+(?:\.[0-9]*)?(?:e[+-]?[0-9]+)?|inf|nan))$/i
// one label pair, then a comma or the end; the values escape \\, \" and \n only
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(?:,|$)/y

function parseLabels (text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {}
  LABEL.lastIndex = 0
  while (LABEL.lastIndex < text.length) {
    const m = LABEL.exec(text)
    if (m === null) throw new Error(`bad labels: ${line}`)
    if (m[1]! in labels) throw new Error(`label repeated: ${line}`)
    labels[m[1]!] = m[2]!
  }
  return labels
}
const SUFFIXES: Record<string, string[]> = { counter: [''], gauge: [''], untyped: [''], histogram: ['_bucket', '_sum', '_count'], summary: ['', '_sum', '_count'] }

function parseExposition (text: string): Map<string, Family> {
  const families = new Map<string, Family>()
  let current: Family | undefined
  const seen = new Set<string>()
  const lines = text.split('\n')
  if (lines.pop() !== '') throw new Error('the exposition must end with a newline')
  for (const line of lines) {
    if (line === '') continue
    let m = /^# HELP ([^ ]+) (.*)$/.exec(line)
    if (m !== null) {
      if (families.has(m[1]!)) throw new Error(`family ${m[1]} declared twice`)
      current = { name: m[1]!, type: '', help: m[2]!, samples: [] }
      families.set(current.name, current)
      continue
    }
    m = /^# TYPE ([^ ]+) (counter|gauge|histogram|summary|untyped)$/.exec(line)
    if (m !== null) {
      if (current === undefined || current.name !== m[1]) throw new Error(`TYPE without its HELP: ${line}`)
      current.type = m[2]!
      continue
    }
    m = SAMPLE.exec(line)
    if (m === null) throw new Error(`not a sample line: ${line}`)
    const family = current
    const name = m[1]!
    if (family === undefined || !SUFFIXES[family.type]!.some(suffix => name === family.name + suffix)) throw new Error(`sample outside its family: ${line}`)
    const labels = parseLabels(m[2] ?? '', line)
    const key = `${name}${JSON.stringify(Object.entries(labels).sort())}`
    if (seen.has(key)) throw new Error(`duplicate sample: ${line}`)
    seen.add(key)
    const text = m[3]!.toLowerCase()
    family.samples.push({ name, labels, value: text.endsWith('nan') ? NaN : text.endsWith('inf') ? (text.startsWith('-') ? -Infinity : Infinity) : Number(text) })
  }
  for (const f of families.values()) if (f.type === 'histogram') checkHistogram(f)
  return families
}

/** buckets cumulative in increasing `le`, the +Inf bucket equal to _count */
function checkHistogram (f: Family): void {
  const series = new Map<string, Sample[]>()
  for (const s of f.samples.filter(s => s.name.endsWith('_bucket'))) {
    const { le, ...rest } = s.labels
    if (le === undefined) throw new Error(`${f.name}: bucket without le`)
    const key = JSON.stringify(Object.entries(rest).sort())
    series.set(key, [...(series.get(key) ?? []), s])
  }
  for (const [key, buckets] of series) {
    const les = buckets.map(b => b.labels.le === '+Inf' ? Infinity : Number(b.labels.le))
    for (let i = 1; i < buckets.length; i++) {
      if (les[i]! <= les[i - 1]! || buckets[i]!.value < buckets[i - 1]!.value) throw new Error(`${f.name}${key}: buckets not cumulative`)
    }
    const count = f.samples.find(s => s.name === `${f.name}_count` && JSON.stringify(Object.entries(s.labels).sort()) === key)
    if (les.at(-1) !== Infinity || count?.value !== buckets.at(-1)!.value) throw new Error(`${f.name}${key}: +Inf bucket is not _count`)
  }
}

function value (families: Map<string, Family>, name: string, labels: Record<string, string> = {}): number | undefined {
  const family = families.get(name.replace(/_(bucket|sum|count)$/, '')) ?? families.get(name)
  return family?.samples.find(s => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v) && Object.keys(s.labels).length === Object.keys(labels).length)?.value
}

async function scrape (url: string): Promise<Map<string, Family>> {
  const res = await raw(url, '/metrics')
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}`)
  return parseExposition(res.body)
}

const key = makeKey('EdDSA')

t.test('parseExposition is strict: it refuses what Prometheus would', async (t) => {
  t.throws(() => parseExposition('# HELP a x\n# TYPE a counter\na{b="c} 1\n'))
  t.throws(() => parseExposition('# HELP a x\n# TYPE a counter\nb 1\n'))
  t.throws(() => parseExposition('# HELP a x\n# TYPE a histogram\na_bucket{le="1"} 2\na_bucket{le="+Inf"} 1\na_count 1\na_sum 0\n'))
  t.throws(() => parseExposition('# HELP a x\n# TYPE a counter\na 1'))
  t.ok(parseExposition('# HELP a x\n# TYPE a counter\na{b="c\\"d",e="f"} 1.5e+3\n').get('a'))
})

t.test('/metrics counts requests by route, status and reason, and exposes the gauges', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const token = signWith(key, goodClaims())
  for (let i = 0; i < 3; i++) await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
  await raw(gw.url, '/api/x')
  await raw(gw.url, '/nowhere')
  const res = await raw(gw.adminUrl, '/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/)
  t.match(res.body, /portcullis_requests_total\{route="orders",status="200",reason="granted"\} 3\n/)
  t.match(res.body, /portcullis_requests_total\{route="orders",status="401",reason="missing_token"\} 1\n/)
  t.match(res.body, /portcullis_requests_total\{route="",status="404",reason="route_not_found"\} 1\n/)
  t.match(res.body, /portcullis_verify_cache_entries 1\n/, 'one distinct token verified and cached')
  t.match(res.body, /portcullis_denylist_entries 0\n/)
  t.match(res.body, /portcullis_ready 1\n/)
  t.notMatch(res.body, new RegExp(token.slice(0, 20)), 'no token material')

  const m = parseExposition(res.body)
  t.equal(m.get('portcullis_request_duration_seconds')?.type, 'histogram')
  t.equal(value(m, 'portcullis_request_duration_seconds_count', { route: 'orders', status_class: '2xx' }), 3)
  t.equal(value(m, 'portcullis_request_duration_seconds_count', { route: 'orders', status_class: '4xx' }), 1)
  t.equal(value(m, 'portcullis_request_duration_seconds_count', { route: '', status_class: '4xx' }), 1)
  t.ok(value(m, 'portcullis_request_duration_seconds_sum', { route: 'orders', status_class: '2xx' })! > 0)
  t.equal(value(m, 'portcullis_upstream_headers_seconds_count', { route: 'orders' }), 3, 'one upstream call per granted request')
  t.equal(value(m, 'portcullis_upstream_duration_seconds_count', { route: 'orders' }), 3)
  t.ok(value(m, 'portcullis_upstream_duration_seconds_sum', { route: 'orders' })! >= value(m, 'portcullis_upstream_headers_seconds_sum', { route: 'orders' })!, 'headers come before the end')
  for (const name of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_eventloop_lag_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_gc_duration_seconds']) {
    t.ok(m.has(name), `${name} exposed`)
  }
})

t.test('verify cache hits and misses and verification failures are counters that move', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const before = await scrape(gw.adminUrl)
  const token = signWith(key, goodClaims())
  for (let i = 0; i < 4; i++) await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
  await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token.slice(0, -4)}AAAA` } })
  const after = await scrape(gw.adminUrl)
  const moved = (name: string): number => (value(after, name) ?? NaN) - (value(before, name) ?? NaN)
  t.equal(after.get('portcullis_verify_cache_hits_total')?.type, 'counter')
  // a token enters the cache on its second verification (src/tokens/verify-cache.ts)
  t.equal(moved('portcullis_verify_cache_hits_total'), 2, 'the third and fourth use: from the cache')
  t.equal(moved('portcullis_verify_cache_misses_total'), 3, 'the first two uses and the forged one were verified')
  t.equal(moved('portcullis_verify_failures_total'), 1, 'the forged one failed')
})

t.test('upstream failures and clients that leave are counted with their code and status 499', async (t) => {
  let held: (() => void) | undefined
  const slow = await startUpstream((_req, res) => { held = () => res.end('late') })
  const dead = await startUpstream()
  const deadUrl = dead.url
  await dead.close()
  t.teardown(() => slow.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'slow', prefix: '/slow', upstream: slow.url, auth: 'public' },
    { name: 'gone', prefix: '/gone', upstream: deadUrl, auth: 'public' },
  ]))
  t.equal((await raw(gw.url, '/gone/x')).status, 502)
  // a client that gives up while the upstream is still working on its request
  await new Promise<void>((resolve) => {
    const url = new URL(gw.url)
    const req = (url.protocol === 'https:' ? httpsRequest : httpRequest)({ host: url.hostname, port: url.port, path: '/slow/x', agent: false })
    req.on('error', () => resolve())
    req.end()
    const waitForUpstream = setInterval(() => {
      if (slow.requests.length === 0) return
      clearInterval(waitForUpstream)
      req.destroy()
    }, 5)
  })
  let m = await scrape(gw.adminUrl)
  for (let i = 0; i < 50 && value(m, 'portcullis_requests_total', { route: 'slow', status: '499', reason: 'client_closed' }) === undefined; i++) {
    await new Promise(resolve => setTimeout(resolve, 10))
    m = await scrape(gw.adminUrl)
  }
  held?.()
  t.equal(value(m, 'portcullis_upstream_errors_total', { route: 'gone', code: 'ECONNREFUSED' }), 1)
  t.equal(value(m, 'portcullis_requests_total', { route: 'gone', status: '502', reason: 'upstream_unavailable' }), 1)
  t.equal(value(m, 'portcullis_request_duration_seconds_count', { route: 'gone', status_class: '5xx' }), 1)
  t.equal(value(m, 'portcullis_requests_total', { route: 'slow', status: '499', reason: 'client_closed' }), 1, 'the decision log\'s 499')
  t.equal(value(m, 'portcullis_upstream_errors_total', { route: 'slow', code: 'PORTCULLIS_CLIENT_GONE' }), 1, 'the upstream request was abandoned')
})

/**
 * The gateway with the metrics plugin registered the way app.ts is to register it, with every
 * source, on an admin app of the test's own (app.ts registers its own on the real admin listener).
 */
async function startWithSources (t: { teardown: (fn: () => unknown) => void }, config: Record<string, any>, feed: () => FeedFigures | undefined = () => undefined, reloads = { succeeded: 0, failed: 0 }): Promise<{ gateway: Gateway, url: string, metrics: GatewayMetrics, scrape: () => Promise<Map<string, Family>>, hash: string }> {
  const parsed = loadConfigText(stringify(config), { env: {} })
  const gateway = await buildGateway(parsed, { logger: pino({ level: 'silent' }) })
  const metrics = new GatewayMetrics()
  const admin = Fastify()
  await admin.register(metricsPlugin, {
    gateway: gateway.app,
    metrics,
    verifier: () => gateway.runtime.verifier,
    denylist: gateway.denylist,
    ready: () => true,
    liveWebSockets: () => gateway.live.size,
    keySets: () => gateway.runtime.issuers.map(i => i.keys),
    revocationFeed: feed,
    configHash: () => gateway.config.hash,
    reloads: () => reloads,
  })
  const l = await listen(gateway, { handleSignals: false })
  t.teardown(async () => { await l.shutdown(); await admin.close() })
  return { gateway, url: `${PUBLIC_SCHEME}://127.0.0.1:${l.port}`, metrics, scrape: async () => parseExposition((await admin.inject('/metrics')).body), hash: parsed.hash }
}

/** a JWKS endpoint on 127.0.0.1 with one ES256 key */
async function startJwks (): Promise<{ url: string, close: () => Promise<void> }> {
  const { publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' })
  const jwks = JSON.stringify({ keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'idp-1', alg: 'ES256', use: 'sig' }] })
  const server = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=600' }).end(jwks) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`,
    close: () => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}

t.test('JWKS, revocation feed, reload, config, WebSocket and security event metrics appear when their sources are given', async (t) => {
  const upstream = await startUpstream()
  const jwks = await startJwks()
  t.teardown(() => Promise.all([upstream.close(), jwks.close()]))
  const config = {
    ...baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required', issuers: ['self', 'idp'] }]),
    issuers: [{ name: 'idp', issuer: 'https://idp.test', jwksUri: jwks.url, audiences: ['api.test'], algorithms: ['ES256'] }],
  }
  let feed = { state: 'ready', stalenessMs: 0, reloads: 1 }
  const reloads = { succeeded: 0, failed: 0 } // as app.ts counts them
  const { gateway, url, metrics, scrape: scrapeAdmin, hash } = await startWithSources(t, config, () => feed, reloads)
  const keys = gateway.runtime.issuers[0]!.keys
  for (let i = 0; i < 200 && keys.status.state !== 'ready'; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(keys.status.state, 'ready', 'the key set fetched')
  await raw(url, '/api/x', { headers: { authorization: `Bearer ${signWith(key, goodClaims())}` } })

  const first = await scrapeAdmin()
  t.equal(value(first, 'portcullis_config_reloads_total', { result: 'success' }), 0, 'present before any reload')
  t.equal(value(first, 'portcullis_config_reloads_total', { result: 'failure' }), 0)
  reloads.succeeded = 1
  reloads.failed = 2
  metrics.securityEvent('login_failed', 'bad_password')
  metrics.securityEvent('login_failed', 'bad_password')
  metrics.securityEvent('refresh_token_reuse', '')
  feed = { state: 'reconnecting', stalenessMs: 2500, reloads: 3 }

  const m = await scrapeAdmin()
  t.equal(value(m, 'portcullis_jwks_state', { issuer: 'idp', state: 'ready' }), 1)
  t.equal(value(m, 'portcullis_jwks_state', { issuer: 'idp', state: 'failed' }), 0)
  t.equal(value(m, 'portcullis_jwks_keys', { issuer: 'idp' }), 1)
  t.equal(value(m, 'portcullis_jwks_fetches_total', { issuer: 'idp' }), 1)
  t.equal(value(m, 'portcullis_jwks_fetch_failures_total', { issuer: 'idp' }), 0)
  t.equal(value(m, 'portcullis_jwks_unknown_kid_fetches_total', { issuer: 'idp' }), 0)
  t.equal(value(m, 'portcullis_jwks_unknown_kid_throttled_total', { issuer: 'idp' }), 0)
  t.equal(value(m, 'portcullis_revocation_feed_state', { state: 'reconnecting' }), 1)
  t.equal(value(m, 'portcullis_revocation_feed_staleness_seconds'), 2.5)
  t.equal(value(m, 'portcullis_revocation_feed_reloads_total'), 3)
  t.equal(value(m, 'portcullis_config_reloads_total', { result: 'success' }), 1)
  t.equal(value(m, 'portcullis_config_reloads_total', { result: 'failure' }), 2)
  t.equal(value(m, 'portcullis_config_info', { hash }), 1)
  t.match(hash, /^[0-9a-f]{64}$/)
  t.equal(value(m, 'portcullis_security_events_total', { event: 'login_failed', label: 'bad_password' }), 2)
  t.equal(value(m, 'portcullis_security_events_total', { event: 'refresh_token_reuse', label: '' }), 1)
  t.equal(value(m, 'portcullis_websockets_open'), 0)
  t.equal(value(m, 'portcullis_requests_total', { route: 'orders', status: '200', reason: 'granted' }), 1, 'this admin app measures the same public listener')
  t.ok(m.has('nodejs_eventloop_lag_p99_seconds'))

  // the feed restarts (a new feed counts from zero): the counter keeps what it had
  feed = { state: 'ready', stalenessMs: 0, reloads: 1 }
  const again = await scrapeAdmin()
  t.equal(value(again, 'portcullis_revocation_feed_reloads_total'), 4, 'monotonic across a restart of its source')
  t.equal(value(again, 'portcullis_revocation_feed_state', { state: 'reconnecting' }), 0, 'a state seen before reads 0')
  t.equal(value(again, 'portcullis_revocation_feed_state', { state: 'ready' }), 1)
})

t.test('a reload\'s new verifier counts from zero: the verify counters never go down', async (t) => {
  const metrics = new GatewayMetrics({ defaultMetrics: false })
  let verifier = { counts: { hits: 5, misses: 2, failures: 1 }, cacheSize: 2 }
  metrics.watch({ verifier: () => verifier })
  const read = async (): Promise<Map<string, Family>> => parseExposition(await metrics.text())
  t.equal(value(await read(), 'portcullis_verify_cache_hits_total'), 5)
  verifier.counts.hits = 7
  t.equal(value(await read(), 'portcullis_verify_cache_hits_total'), 7)
  verifier = { counts: { hits: 1, misses: 1, failures: 0 }, cacheSize: 1 } // reload
  const m = await read()
  t.equal(value(m, 'portcullis_verify_cache_hits_total'), 8)
  t.equal(value(m, 'portcullis_verify_cache_misses_total'), 3)
  t.equal(value(m, 'portcullis_verify_failures_total'), 1)
  t.equal(value(m, 'portcullis_verify_cache_entries'), 1, 'a gauge reads the verifier in force')
  t.notOk(m.has('portcullis_jwks_state'), 'no key-set source: no JWKS metrics')
})

t.test('a WebSocket through the gateway: counted, the open socket shows, nothing left in the correlation map', async (t) => {
  const server = createServer((_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => { ws.on('message', (data) => { ws.send(`echo:${String(data)}`) }) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>(resolve => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>(resolve => server.close(() => resolve()))
  })
  const gw = await startWithSources(t, baseConfig(key, [
    { name: 'chat', prefix: '/ws', upstream: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, websocket: true, auth: 'required', scopes: { GET: ['chat'], '*': ['chat'] } },
  ]))
  const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/ws/room`, { headers: { authorization: `Bearer ${signWith(key, goodClaims({ scope: 'chat' }))}` } })
  t.teardown(() => ws.terminate())
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
  ws.send('hi')
  await new Promise(resolve => ws.once('message', resolve))
  const m = await gw.scrape()
  const upgraded = m.get('portcullis_requests_total')!.samples.filter(s => s.labels.route === 'chat')
  t.same(upgraded.map(s => [s.labels.reason, s.value]), [['granted', 1]], 'the upgrade is one granted request')
  t.equal(value(m, 'portcullis_websockets_open'), 1, 'an authenticated socket is open')
  t.equal(value(m, 'portcullis_upstream_headers_seconds_count', { route: 'chat' }), undefined, 'WebSockets go upstream through ws, not undici: no upstream histogram')
  t.equal(telemetryHub(gw.gateway.app).inflight, 0)
})
