/**
 * fix-h2-request-timeout (a hostile review of operations, 2026-12-05): server.requestTimeout —
 * "the time a client has to send a whole request" — held over HTTP/1.1 only. Node applies it to
 * HTTP/1.1 connections, and an HTTP/2 session's own timeout restarts with every frame, so an
 * HTTP/2 stream trickling its body a byte at a time stayed open for ever: to /auth/login, and to
 * a proxied route, where it held an upstream connection — four such streams on one connection
 * held a `connections: 4` route's whole pool, and everyone else got 503 upstream_busy (one
 * connection's 128 streams do the same at the default 128). Now, past the time, such a request
 * gets 408 as over HTTP/1.1 (or, if its answer is already under way, the stream is reset) and
 * the upstream connection goes back to the pool.
 *
 * Real sockets: the gateway over TLS with HTTP/2, a real upstream that answers its headers at
 * once and the rest when the body ends, a client that trickles.
 */
import t from 'tap'
import { connect, type ClientHttp2Session, type ClientHttp2Stream } from 'node:http2'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { testCertificate } from '../fixtures/tls.js'
import { h2Request } from '../fixtures/h2-client.js'
import { bodyEndUpstream } from '../fixtures/upstream.js'
import { openStore } from '../../src/sessions/store.js'

const REQUEST_TIMEOUT_MS = 1_000
/** a loaded machine's slack on top of the timeout */
const SLACK_MS = 2_500
const POOL = 2

const cert = testCertificate(t)
// headers at once (the exchange has started), the rest when the body ends
const upstream = await bodyEndUpstream(t)
const store = await openStore({ dataDir: 'memory://' })
t.teardown(() => store.close())
const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [
  // the streamed path: a route that reads bodies whole gives a slow one no upstream connection at all (fix-slow-body-holds-upstream)
  { name: 'upload', prefix: '/upload', upstream: upstream.url, auth: 'public', connections: POOL, queueLimit: 0, timeout: '30s', requestBuffering: false },
], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true, requestTimeout: `${REQUEST_TIMEOUT_MS}ms` } }), { store })

const session = (): ClientHttp2Session => {
  const s = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
  s.on('error', () => {})
  t.teardown(() => s.destroy())
  return s
}

interface Trickled { status: Promise<number>, closed: Promise<{ afterMs: number, rstCode: number }>, body: Promise<string> }

/** a POST whose body comes a byte every 200 ms until the gateway ends it (or the test gives up: then the assertions on time fail) */
function trickle (s: ClientHttp2Session, path: string): Trickled {
  const startMs = performance.now()
  const stream: ClientHttp2Stream = s.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json', 'content-length': '1000' })
  stream.on('error', () => {})
  let body = ''
  stream.on('data', (c: Buffer) => { body += c.toString() })
  stream.write('{')
  const drip = setInterval(() => { if (!stream.closed) stream.write(' ') }, 200)
  const giveUp = setTimeout(() => { stream.destroy() }, REQUEST_TIMEOUT_MS + 2 * SLACK_MS)
  const closed = new Promise<{ afterMs: number, rstCode: number }>((resolve) => {
    stream.on('close', () => { clearInterval(drip); clearTimeout(giveUp); resolve({ afterMs: performance.now() - startMs, rstCode: stream.rstCode ?? 0 }) })
  })
  t.teardown(() => { clearInterval(drip); clearTimeout(giveUp); stream.destroy() })
  return {
    status: new Promise((resolve) => { stream.on('response', (h) => { resolve(Number(h[':status'])) }); stream.on('close', () => { resolve(0) }) }),
    closed,
    body: closed.then(() => body),
  }
}

t.test('a trickled body to an endpoint of the gateway\'s own: 408 at the timeout', async (t) => {
  const r = trickle(session(), '/auth/login')
  const { afterMs } = await r.closed
  t.equal(await r.status, 408, 'answered 408')
  t.equal((JSON.parse(await r.body) as { code?: string }).code, 'request_timeout', 'request_timeout, as over HTTP/1.1')
  t.ok(afterMs < REQUEST_TIMEOUT_MS + SLACK_MS, `the stream ended after ${afterMs.toFixed(0)} ms (requestTimeout ${REQUEST_TIMEOUT_MS} ms)`)
})

t.test('trickled bodies to a proxied route: cut off at the timeout, and the route\'s pool is free again', async (t) => {
  const s = session()
  const attackers = Array.from({ length: POOL }, () => trickle(s, '/upload/x'))
  const statuses = await Promise.all(attackers.map(async (a) => await a.status))
  t.same(statuses, attackers.map(() => 200), 'each held an upstream connection (its answer had begun)')
  const ends = await Promise.all(attackers.map(async (a) => await a.closed))
  t.ok(ends.every((e) => e.afterMs < REQUEST_TIMEOUT_MS + SLACK_MS), `every stream was ended by ${Math.max(...ends.map((e) => e.afterMs)).toFixed(0)} ms`)
  t.ok(ends.every((e) => e.rstCode !== 0), 'reset (its answer was under way)')
  const res = await h2Request(s, { ':method': 'POST', ':path': '/upload/y', 'content-type': 'text/plain' }, 'hello')
  t.equal(res.status, 200, 'a normal request is served, not 503 upstream_busy')
  t.equal(res.body, 'got 5')
})

t.test('a body sent in time is not cut', async (t) => {
  const res = await h2Request(session(), { ':method': 'POST', ':path': '/upload/z', 'content-type': 'text/plain' }, 'x'.repeat(1000))
  t.equal(res.status, 200)
  t.equal(res.body, 'got 1000')
})
