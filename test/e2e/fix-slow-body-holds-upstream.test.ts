/**
 * fix-slow-body-holds-upstream (left by stop 43's fix-http1-body-timeout): the gateway streamed
 * every request body upstream as it arrived, so a client that sent its body slowly held one of
 * the route's upstream connections for up to server.requestTimeout (30 s by default). A few
 * such clients — anonymous, on a public route — took a route's whole pool, and everyone else
 * got 503 upstream_busy (or waited in the queue) until they were cut off; then they came back.
 * Now a route reads the body whole first (routes[].requestBuffering, on by default, as nginx's
 * proxy_request_buffering): a slow body holds only its own connection to the gateway, and the
 * upstream never sees a request whose body did not arrive. What it costs is bounded: a body
 * counts against the route's maxBodyBytes (413) and the process's server.requestBufferBytes
 * (503 gateway_busy), byte by byte as it arrives; a body not whole within the route's timeout is
 * the client's delay (408 request_timeout, not the upstream's 504). `requestBuffering: false`
 * streams as before (large uploads).
 *
 * Real sockets: the gateway (plain, or over TLS in scripts/test-tls.sh's runs), a second one
 * with HTTP/2, a real upstream that answers its headers at once and the rest when the body
 * ends, raw clients that trickle.
 */
import t from 'tap'
import { connect, type ClientHttp2Session } from 'node:http2'
import { createServer, type IncomingHttpHeaders } from 'node:http'
import type { AddressInfo } from 'node:net'
import { baseConfig, makeKey, startGateway, raw } from '../fixtures/gateway.js'
import { chunked, RawClient, requestBytes } from '../fixtures/raw-client.js'
import { testCertificate } from '../fixtures/tls.js'
import { h2Request } from '../fixtures/h2-client.js'
import { until } from '../fixtures/until.js'
import { openStore } from '../../src/sessions/store.js'

const POOL = 2
const BUDGET = 65_536
/** a loaded machine's slack */
const SLACK_MS = 2_500

/** what the upstream was sent: each request's path and headers when they arrived, its body size when it ended */
interface Seen { url: string, headers: IncomingHttpHeaders, body?: string }
const seen: Seen[] = []
// headers at once (a streamed request holds its connection from here), the rest when the body ends
const upstream = createServer((req, res) => {
  const entry: Seen = { url: req.url ?? '', headers: req.headers }
  seen.push(entry)
  res.writeHead(200, { 'content-type': 'text/plain' })
  res.flushHeaders()
  let body = ''
  req.on('data', (c: Buffer) => { body += c.toString('latin1') })
  req.on('end', () => { entry.body = body; res.end(`got ${body.length}`) })
})
await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve))
t.teardown(() => { upstream.closeAllConnections(); upstream.close() })
const upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`
const sawPath = (path: string): boolean => seen.some((s) => s.url === path)

const routes = [
  { name: 'upload', prefix: '/upload', upstream: upstreamUrl, auth: 'public', connections: POOL, queueLimit: 0, timeout: '30s', maxBodyBytes: BUDGET },
  { name: 'quick', prefix: '/quick', upstream: upstreamUrl, auth: 'public', timeout: '1s', maxBodyBytes: 4096 },
  { name: 'stream', prefix: '/stream', upstream: upstreamUrl, auth: 'public', requestBuffering: false, maxBodyBytes: 1_000_000 },
]
const store = await openStore({ dataDir: 'memory://' })
t.teardown(() => store.close())
const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), routes, { server: { requestTimeout: '20s', requestBufferBytes: BUDGET } }), { store })

/** portcullis_request_body_buffer_bytes on the gateway's admin listener */
async function heldBytes (): Promise<number> {
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text()
  return Number(/^portcullis_request_body_buffer_bytes (\d+)/m.exec(text)?.[1] ?? NaN)
}

/** a POST that declares `length` bytes, sends `first` of them, then a byte every 100 ms until stopped */
async function trickle (path: string, length = 1000, first = 1): Promise<{ client: RawClient, stop: () => void }> {
  const client = await RawClient.connect(gw.url)
  await client.send(`POST ${path} HTTP/1.1\r\nhost: gw.test\r\ncontent-type: text/plain\r\ncontent-length: ${length}\r\n\r\n${'x'.repeat(first)}`)
  const drip = setInterval(() => { if (!client.ended) client.socket.write('x') }, 100)
  const stop = (): void => { clearInterval(drip); client.destroy() }
  t.teardown(stop)
  return { client, stop }
}

t.test('slow bodies hold no upstream connection: a route\'s pool stays free for others', async (t) => {
  // more trickles than the route has connections and queue: before, two held the pool and the third got 503
  const trickles = await Promise.all(Array.from({ length: POOL + 2 }, async (_, i) => await trickle(`/upload/slow-${i}`)))
  await new Promise((resolve) => setTimeout(resolve, 300))
  for (let i = 0; i < 3; i++) {
    const res = await raw(gw.url, `/upload/after-${i}`, { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } })
    t.equal(res.status, 200, `request ${i} beside the slow bodies is served (not 503 upstream_busy)`)
    t.equal(res.body, 'got 5', 'with its whole body')
  }
  t.notOk(seen.some((s) => s.url.startsWith('/upload/slow-')), 'the upstream never saw a request whose body had not arrived')
  for (const r of trickles) r.stop()
})

t.test('a buffered body reaches the upstream whole, with its length', async (t) => {
  const body = 'y'.repeat(3000)
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  // chunked, in three pieces: forwarded with a Content-Length, not as chunks
  await client.send(Buffer.concat([
    requestBytes('POST', '/upload/whole', [['host', 'gw.test'], ['content-type', 'text/plain'], ['transfer-encoding', 'chunked']]),
    chunked([body.slice(0, 1000), body.slice(1000, 2000), body.slice(2000)]),
  ]))
  const res = await client.response()
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'got 3000')
  const got = seen.find((s) => s.url === '/upload/whole')
  t.equal(got?.headers['content-length'], '3000', 'sent upstream with its length')
  t.equal(got?.headers['transfer-encoding'], undefined, 'not chunked')
  t.equal(got?.body, body)
})

t.test('a body in one-byte chunks: whole and in order, and held (and counted) at about its size', async (t) => {
  const crumbs = (n: number): Buffer => chunked(Array.from({ length: n }, (_, i) => String(i % 10)))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(Buffer.concat([requestBytes('POST', '/upload/crumbs', [['host', 'gw.test'], ['transfer-encoding', 'chunked']]), crumbs(20_000)]))
  const res = await client.response()
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'got 20000')
  t.equal(seen.find((s) => s.url === '/upload/crumbs')?.body, '0123456789'.repeat(2_000), 'whole and in order')
  // 2,000 one-byte chunks, the body not ended: what the process holds for them
  const open = await RawClient.connect(gw.url)
  t.teardown(() => open.destroy())
  const head = requestBytes('POST', '/upload/open-crumbs', [['host', 'gw.test'], ['transfer-encoding', 'chunked']])
  const body = crumbs(2_001)
  await open.send(Buffer.concat([head, body.subarray(0, body.length - 5)])) // all but the last chunk's end
  await until('the bytes to arrive', async () => await heldBytes() >= 2_000)
  const held = await heldBytes()
  // kept one Buffer per chunk, they would hold ~100 bytes of heap each (and count 1)
  t.ok(held <= 2 * 2_001 + 256, `held ${held} bytes: at most twice the body, not a Buffer per byte`)
  open.destroy()
  await until('the bytes to be given back', async () => await heldBytes() === 0)
})

t.test('Expect: 100-continue on a buffered route: told to send, then forwarded', async (t) => {
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send('POST /upload/continue HTTP/1.1\r\nhost: gw.test\r\ncontent-type: text/plain\r\ncontent-length: 5\r\nexpect: 100-continue\r\n\r\n')
  await client.waitFor('HTTP/1.1 100 Continue')
  t.notOk(sawPath('/upload/continue'), 'nothing upstream before the body')
  await client.send('hello')
  const res = await client.response()
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'got 5')
})

t.test('a body not whole within the route\'s timeout: 408 request_timeout, never the upstream\'s 504', async (t) => {
  const started = performance.now()
  const r = await trickle('/quick/slow')
  const res = await r.client.response({ timeoutMs: 1000 + SLACK_MS })
  const afterMs = performance.now() - started
  t.equal(res.status, 408, 'answered 408')
  t.equal(JSON.parse(res.body.toString()).code, 'request_timeout')
  t.equal(res.headers.connection, 'close', 'the rest of the body is not read as a request')
  t.ok(afterMs < 1000 + SLACK_MS, `at the route timeout (${Math.round(afterMs)} ms)`)
  await r.client.closed
  t.notOk(sawPath('/quick/slow'), 'the upstream never saw it')
  r.stop()
})

t.test('a body over maxBodyBytes while buffering: 413, and the upstream never sees it', async (t) => {
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(Buffer.concat([
    requestBytes('POST', '/quick/big', [['host', 'gw.test'], ['transfer-encoding', 'chunked']]),
    chunked(['z'.repeat(3000), 'z'.repeat(3000)]),
  ]))
  const res = await client.response()
  t.equal(res.status, 413)
  t.equal(JSON.parse(res.body.toString()).code, 'payload_too_large')
  t.notOk(sawPath('/quick/big'), 'the upstream never saw it')
})

t.test('the bodies held at once are bounded by server.requestBufferBytes, counted as they arrive', async (t) => {
  // a client that only declares a large body takes (almost) nothing from the others
  const declared = await trickle('/upload/declared', BUDGET, 1)
  // one that has sent 20,000 bytes holds them (and at most as many again: its buffer grows by doubling) while it dawdles
  const holder = await trickle('/upload/holder', 60_000, 20_000)
  await new Promise((resolve) => setTimeout(resolve, 300))
  const busy = await raw(gw.url, '/upload/second', { method: 'POST', body: 'w'.repeat(50_000), headers: { 'content-type': 'text/plain' } })
  t.equal(busy.status, 503, 'a second body that would pass the budget: 503')
  t.equal(busy.json().code, 'gateway_busy')
  t.equal(busy.headers['retry-after'], '1', 'with Retry-After')
  const small = await raw(gw.url, '/upload/small', { method: 'POST', body: 'w'.repeat(5_000), headers: { 'content-type': 'text/plain' } })
  t.equal(small.status, 200, 'a body that fits beside it is served')
  // the holder and the declarer go away: what they held is given back
  holder.stop()
  declared.stop()
  await Promise.all([holder.client.closed, declared.client.closed])
  await new Promise((resolve) => setTimeout(resolve, 100))
  const after = await raw(gw.url, '/upload/third', { method: 'POST', body: 'w'.repeat(50_000), headers: { 'content-type': 'text/plain' } })
  t.equal(after.status, 200, 'once they left, the body refused beside them is served')
  t.equal(after.body, 'got 50000')
  t.notOk(sawPath('/upload/second') || sawPath('/upload/holder') || sawPath('/upload/declared'), 'the upstream saw neither refused nor unfinished bodies')
})

t.test('requestBuffering: false streams the body as it arrives (the upstream holds a connection meanwhile)', async (t) => {
  const r = await trickle('/stream/live')
  await until('the upstream to see the request', () => sawPath('/stream/live'))
  t.equal(seen.find((s) => s.url === '/stream/live')?.body, undefined, 'the upstream had the request before its body ended')
  r.stop()
})

t.test('every byte held is given back: after clients that finished, left, timed out and were refused, the gauge reads 0', async (t) => {
  // a storm of each way a buffered body ends, at once
  const gone = await Promise.all(Array.from({ length: 20 }, async (_, i) => await trickle(`/upload/gone-${i}`, 5000, 500 + i)))
  const outcomes = await Promise.all([
    ...Array.from({ length: 20 }, async (_, i) => (await raw(gw.url, `/upload/done-${i}`, { method: 'POST', body: 'd'.repeat(1000 + i) })).status),
    ...Array.from({ length: 5 }, async (_, i) => (await raw(gw.url, `/quick/over-${i}`, { method: 'POST', body: 'o'.repeat(5000) })).status),
    ...Array.from({ length: 3 }, async (_, i) => { const r = await trickle(`/quick/late-${i}`); return (await r.client.response({ timeoutMs: 1000 + SLACK_MS })).status }),
  ])
  t.ok(outcomes.slice(0, 20).every((s) => s === 200 || s === 503), 'finished (or refused while the budget was full)')
  t.same(outcomes.slice(20, 25), [413, 413, 413, 413, 413], 'over maxBodyBytes')
  t.same(outcomes.slice(25), [408, 408, 408], 'timed out')
  for (const r of gone) r.stop()
  await Promise.all(gone.map(async (r) => await r.client.closed))
  await until('the held bytes to return to 0', async () => await heldBytes() === 0)
  t.equal(await heldBytes(), 0, 'portcullis_request_body_buffer_bytes 0')
})

t.test('over HTTP/2: a trickled stream holds no upstream connection either', async (t) => {
  const cert = testCertificate(t)
  const h2 = await startGateway(t, baseConfig(makeKey('EdDSA'), [routes[0]], {
    server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true, requestTimeout: '20s', requestBufferBytes: BUDGET },
  }), { store })
  const session: ClientHttp2Session = connect(`https://127.0.0.1:${h2.port}`, { ca: cert.certPem, servername: 'localhost' })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  const drips: NodeJS.Timeout[] = []
  t.teardown(() => { for (const d of drips) clearInterval(d) })
  for (let i = 0; i < POOL + 2; i++) {
    const stream = session.request({ ':method': 'POST', ':path': `/upload/h2-slow-${i}`, 'content-type': 'text/plain', 'content-length': '1000' })
    stream.on('error', () => {})
    stream.write('x')
    drips.push(setInterval(() => { if (!stream.closed) stream.write('x') }, 100))
  }
  await new Promise((resolve) => setTimeout(resolve, 300))
  const res = await h2Request(session, { ':method': 'POST', ':path': '/upload/h2-after', 'content-type': 'text/plain' }, 'hello')
  t.equal(res.status, 200, 'a request beside them is served (not 503 upstream_busy)')
  t.equal(res.body, 'got 5')
  const got = seen.find((s) => s.url === '/upload/h2-after')
  t.equal(got?.headers['content-length'], '5', 'a body sent without a length goes upstream with one')
  t.notOk(seen.some((s) => s.url.startsWith('/upload/h2-slow-')), 'the upstream never saw the trickled streams')
})
