/**
 * fix-h2-timeout-logs-stacks (a stop 43 review of operations): the HTTP/2 408 of
 * server.requestTimeout (fix-h2-request-timeout) is written by the edge, behind Fastify's back;
 * when the stream is then reset, Fastify's body reader (an endpoint of the gateway's own) and the
 * proxy exchange (a proxied route) still ended the request with reply.send(), and each logged
 * "Reply was already sent" at warn with a whole stack — a client could write 128 such lines per
 * connection every requestTimeout, where the README says a client cannot write error lines at will.
 *
 * Real sockets: the gateway over TLS with HTTP/2 and its log captured, a real upstream, a client
 * that trickles its body.
 */
import t from 'tap'
import { connect, type ClientHttp2Session } from 'node:http2'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { testCertificate } from '../fixtures/tls.js'
import { bodyEndUpstream } from '../fixtures/upstream.js'
import { openStore } from '../../src/sessions/store.js'

const REQUEST_TIMEOUT_MS = 1_000
const SLACK_MS = 3_000

const lines: Array<Record<string, unknown>> = []
const logger = pino({ level: 'info' }, new Writable({
  write (chunk: Buffer, _enc, cb) {
    for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
    cb()
  },
}))

const cert = testCertificate(t)
// answers when the body ends, headers and all: until then the gateway can still answer 408 itself
const upstream = await bodyEndUpstream(t, { headersAtOnce: false })
const store = await openStore({ dataDir: 'memory://' })
t.teardown(() => store.close())
const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [
  { name: 'upload', prefix: '/upload', upstream: upstream.url, auth: 'public' },
], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true, requestTimeout: `${REQUEST_TIMEOUT_MS}ms` } }), { store, logger })

const session: ClientHttp2Session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
session.on('error', () => {})
t.teardown(() => session.destroy())

/** a POST whose body comes a byte every 200 ms; resolves with its status when the gateway ends the stream */
async function trickle (path: string): Promise<number> {
  const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json', 'content-length': '1000' })
  stream.on('error', () => {})
  let status = 0
  stream.on('response', (h) => { status = Number(h[':status']) })
  stream.resume()
  stream.write('{')
  const drip = setInterval(() => { if (!stream.closed) stream.write(' ') }, 200)
  const giveUp = setTimeout(() => { stream.destroy() }, REQUEST_TIMEOUT_MS + SLACK_MS)
  await new Promise<void>((resolve) => stream.on('close', () => { clearInterval(drip); clearTimeout(giveUp); resolve() }))
  return status
}

t.test('trickled bodies answered 408 leave no warning and no stack in the log', async (t) => {
  const statuses = await Promise.all(['/auth/login', '/auth/refresh', '/upload/a', '/upload/b'].map(trickle))
  t.same(statuses, [408, 408, 408, 408], 'each answered 408')
  // what Fastify does after the reset happens as the stream closes; a few turns more
  await new Promise(resolve => setTimeout(resolve, 300))
  const loud = lines.filter(l => Number(l.level) >= 40)
  t.same(loud.map(l => l.msg), [], 'no line at warn or above')
  t.notOk(lines.some(l => JSON.stringify(l).includes('"stack"')), 'no stack in any line')
  t.ok(lines.some(l => l.reason === 'request_timeout'), 'the decision lines say request_timeout')
  const after = await new Promise<number>((resolve) => {
    const s = session.request({ ':method': 'GET', ':path': '/upload/after' })
    s.on('error', () => { resolve(0) })
    s.on('response', (h) => { resolve(Number(h[':status'])); s.resume() })
    s.end()
  })
  t.equal(after, 200, 'the connection still serves')
})
