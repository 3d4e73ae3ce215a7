import t from 'tap'
import { connect as h2connect } from 'node:http2'
import { WebSocket } from 'ws'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { testCertificate } from '../fixtures/tls.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'

// Issue 8, item 1: the client's Host reached the upstream (`Host: evil.example` arrived as is,
// `Connection: host` removed it altogether, WebSocket upgrades passed it too). Behind a
// Host-routed ingress or mesh a public route then reached any virtual host. The upstream
// gets its own host:port; the client's Host goes in x-forwarded-host; `preserveHost` opts out.

const key = makeKey('EdDSA')

function hostLines (rawHeaders: string[]): string[] {
  const out: string[] = []
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === 'host') out.push(rawHeaders[i + 1]!)
  return out
}

t.test('a plain route: the upstream gets its own Host, whatever the client sent', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'catalog', prefix: '/api/catalog', upstream: upstream.url, auth: 'public' },
    { name: 'orders', prefix: '/api/orders', upstream: upstream.url, auth: 'required' },
  ]))
  const own = `127.0.0.1:${upstream.port}`
  const token = signWith(key, goodClaims())
  const rows: Array<[name: string, path: string, headers: Array<[string, string]>]> = [
    ['public route, Host: evil.example', '/api/catalog/x', [['Host', 'evil.example']]],
    ['public route, Connection: host', '/api/catalog/x', [['Host', 'evil.example'], ['Connection', 'host']]],
    ['public route, Connection: close, host, x-forwarded-host', '/api/catalog/x', [['Host', 'evil.example'], ['Connection', 'close, Host, X-Forwarded-Host']]],
    ['protected route, Host: evil.example', '/api/orders/x', [['Host', 'evil.example'], ['Authorization', `Bearer ${token}`]]],
  ]
  for (const [name, path, headers] of rows) {
    upstream.requests.length = 0
    const res = await rawRequest(gw.url, requestBytes('GET', path, headers))
    t.equal(res.status, 200, `${name}: proxied`)
    const got = upstream.requests[0]
    t.ok(got, `${name}: the upstream saw the request`)
    if (got === undefined) continue
    t.same(hostLines(got.rawHeaders), [own], `${name}: exactly one Host, the upstream's own`)
    t.equal(got.headers['x-forwarded-host'], 'evil.example', `${name}: the client's Host in x-forwarded-host`)
  }
})

t.test('preserveHost: true sends the client\'s (validated) Host', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'site', prefix: '/site', upstream: upstream.url, auth: 'public', preserveHost: true },
  ]))
  const res = await rawRequest(gw.url, requestBytes('GET', '/site/x', [['Host', 'shop.example:8443'], ['Connection', 'host']]))
  t.equal(res.status, 200)
  t.same(hostLines(upstream.requests[0]!.rawHeaders), ['shop.example:8443'], 'the client\'s Host, once, even when Connection names it')
})

t.test('preserveHost over HTTP/2: the client\'s :authority, which is its Host there', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const cert = testCertificate(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'site', prefix: '/site', upstream: upstream.url, auth: 'public', preserveHost: true },
    { name: 'own', prefix: '/own', upstream: upstream.url, auth: 'public' },
  ], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }))
  const session = h2connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem })
  t.teardown(() => session.close())
  const get = (path: string): Promise<number> => new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':authority': 'shop.example:8443' })
    stream.on('response', (h) => { stream.resume(); stream.on('end', () => resolve(Number(h[':status']))) })
    stream.on('error', reject)
    stream.end()
  })
  t.equal(await get('/site/x'), 200)
  t.same(hostLines(upstream.requests.at(-1)!.rawHeaders), ['shop.example:8443'], 'preserveHost: the :authority')
  t.equal(await get('/own/x'), 200)
  t.same(hostLines(upstream.requests.at(-1)!.rawHeaders), [`127.0.0.1:${upstream.port}`], 'otherwise: the upstream\'s own')
})

t.test('a WebSocket upgrade: the upstream gets its own Host too', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'public' },
  ]))
  const ws = new WebSocket(`${gw.url.replace(/^http/, 'ws')}/ws/room`, { headers: { host: 'evil.example' }, handshakeTimeout: 3000 })
  t.teardown(() => ws.terminate())
  await new Promise<void>((resolve, reject) => { ws.once('open', () => resolve()); ws.once('error', reject); ws.once('unexpected-response', (_q, r) => reject(new Error(`status ${r.statusCode}`))) })
  // the upstream's `connection` event may follow the client's `open` by a turn
  for (let i = 0; i < 100 && upstream.upgrades.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(upstream.upgrades.length, 1, 'the upgrade reached the upstream')
  const req = upstream.upgrades[0]
  if (req === undefined) return
  t.same(hostLines(req.rawHeaders), [new URL(upstream.url).host], 'exactly one Host, the upstream\'s own')
  t.equal(req.headers['x-forwarded-host'], 'evil.example', 'the client\'s Host in x-forwarded-host')
})
