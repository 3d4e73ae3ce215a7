/**
 * fix-http1-body-timeout (a stop 43 review of operations): server.requestTimeout — "the time a
 * client has to send a whole request" — did not hold for an HTTP/1.1 request's body. Fastify
 * sets the server's requestTimeout after creating it and leaves headersTimeout at Node's
 * 60,000 ms; with headersTimeout above requestTimeout, Node's connection check let a request
 * whose headers had arrived run on to 60 s. So a body trickled a byte at a time got its 408
 * from /auth/login after 60.5 s, and held an upstream connection of a proxied route until the
 * route's own timeout — 140 such clients took a 128-connection route's whole pool and everyone
 * else waited. headersTimeout is now never above requestTimeout, on every listener (it was
 * already so for the HTTP/1.1 connections of an HTTP/2 listener, fix-h2-http1-request-timeout).
 *
 * Real sockets: the gateway (plain, or over TLS in scripts/test-tls.sh's runs), a real upstream
 * that answers its headers at once and the rest when the body ends, raw clients that trickle.
 */
import t from 'tap'
import { baseConfig, makeKey, startGateway, raw } from '../fixtures/gateway.js'
import { RawClient } from '../fixtures/raw-client.js'
import { bodyEndUpstream } from '../fixtures/upstream.js'
import { openStore } from '../../src/sessions/store.js'

const REQUEST_TIMEOUT_MS = 1_000
/** Node checks connections every second; and a loaded machine's slack */
const SLACK_MS = 3_000
const POOL = 2

const upstream = await bodyEndUpstream(t)
const store = await openStore({ dataDir: 'memory://' })
t.teardown(() => store.close())
const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [
  // the streamed path: a route that reads bodies whole gives a slow one no upstream connection at all (fix-slow-body-holds-upstream)
  { name: 'upload', prefix: '/upload', upstream: upstream.url, auth: 'public', connections: POOL, queueLimit: 0, timeout: '30s', requestBuffering: false },
], { server: { requestTimeout: `${REQUEST_TIMEOUT_MS}ms` } }), { store })

interface Trickled { client: RawClient, startMs: number, stop: () => void }

/** a POST whose 1,000-byte body comes a byte every 200 ms until the gateway ends it (or the test's teardown) */
async function trickle (path: string): Promise<Trickled> {
  const client = await RawClient.connect(gw.url)
  const startMs = performance.now()
  await client.send(`POST ${path} HTTP/1.1\r\nhost: gw.test\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{`)
  const drip = setInterval(() => { if (!client.ended) client.socket.write(' ') }, 200)
  const stop = (): void => { clearInterval(drip); client.destroy() }
  t.teardown(stop)
  return { client, startMs, stop }
}

t.test('a trickled body to an endpoint of the gateway\'s own: 408 at the timeout', async (t) => {
  const r = await trickle('/auth/login')
  const res = await r.client.response({ timeoutMs: REQUEST_TIMEOUT_MS + SLACK_MS })
  const afterMs = performance.now() - r.startMs
  t.equal(res.status, 408, 'answered 408')
  t.ok(afterMs < REQUEST_TIMEOUT_MS + SLACK_MS, `within the timeout (${Math.round(afterMs)} ms)`)
  await r.client.closed
  t.pass('and the connection closed')
  r.stop()
})

t.test('trickled bodies to a proxied route give its upstream connections back at the timeout', async (t) => {
  // more trickles than the route has connections: before, they held the pool past the timeout
  const trickles = await Promise.all(Array.from({ length: POOL + 1 }, async () => await trickle('/upload/x')))
  const ends = await Promise.all(trickles.map(async (r) => {
    await Promise.race([r.client.closed, new Promise(resolve => setTimeout(resolve, REQUEST_TIMEOUT_MS + SLACK_MS))])
    return { ended: r.client.ended, afterMs: performance.now() - r.startMs }
  }))
  for (const [i, e] of ends.entries()) t.ok(e.ended && e.afterMs < REQUEST_TIMEOUT_MS + SLACK_MS, `trickle ${i} ended by the gateway within the timeout (${Math.round(e.afterMs)} ms)`)
  // while the trickling clients are still there (before, they held the pool: 503 upstream_busy)
  const res = await raw(gw.url, '/upload/after', { method: 'POST', body: 'hello', headers: { 'content-type': 'text/plain' } })
  t.equal(res.status, 200, 'a request after them is served')
  t.equal(res.body, 'got 5', 'with its whole body')
  for (const r of trickles) r.stop()
})
