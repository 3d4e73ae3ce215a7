import t from 'tap'
import { connect } from 'node:http2'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { testCertificate } from '../fixtures/tls.js'
import { h2Request } from '../fixtures/h2-client.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { until } from '../fixtures/until.js'
import { openStore } from '../../src/sessions/store.js'

// fix-unknown-method-over-h2 (found by a hostile review, stop 33): HTTP/2 carries any token
// as a method, where HTTP/1.1's parser refuses the ones it does not know. A method Fastify
// does not know (`FOO`, or `delete` in lower case) found no route, not even the 404 handler:
// each request wrote two warn lines — "the default handler for 404 did not catch this, this
// is likely a fastify bug" and the whole route tree — and no decision line, so any client
// could fill the log at will; the answer was a 404 with the code `bad_request`. Methods
// Fastify knows but the gateway never forwards (PROPFIND, PURGE, TRACE, QUERY…) were a 404
// `route_not_found` on paths that have a route. Now each is a 405 `method_not_allowed` with
// the route's `Allow` (404 `route_not_found` where no route matches), one decision line with
// the method the client sent, nothing upstream.

const key = makeKey('EdDSA')
const APP = 'https://app.example.test'

interface Line { msg: string, level: number, method?: string, status?: number, reason?: string, route?: string | null }

t.test('over HTTP/2, a method the gateway does not forward is a 405 with one decision line and no warning', async (t) => {
  const cert = testCertificate(t)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (c, _e, cb) { out += String(c); cb() } }))
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public', methods: ['GET', 'POST'] },
  ], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }), { logger })
  const lines = (): Line[] => out.trim().split('\n').filter(Boolean).map(l => JSON.parse(l))
  const session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
  t.teardown(() => session.close())
  const send = async (method: string, path: string): Promise<{ status: number, allow: unknown, code: unknown }> => {
    const { status, headers, body } = await h2Request(session, { ':method': method, ':path': path })
    return { status, allow: headers.allow, code: body.startsWith('{') ? JSON.parse(body).code : undefined }
  }

  t.same(await send('GET', '/pub/x'), { status: 200, allow: undefined, code: undefined }, 'control: GET is forwarded')
  const seen = upstream.requests.length
  const methods = ['FOO', 'delete', 'Get', 'PROPFIND', 'TRACE', 'PURGE', 'QUERY', 'MKCOL']
  for (const method of methods) {
    t.same(await send(method, '/pub/x'), { status: 405, allow: 'GET, POST', code: 'method_not_allowed' }, `${method} on a route: 405 with the route's Allow`)
    t.same(await send(method, '/nowhere/x'), { status: 404, allow: undefined, code: 'route_not_found' }, `${method} where no route matches: 404`)
  }
  t.equal(upstream.requests.length, seen, 'the upstream saw none of them')
  await until('every decision line written', () => lines().filter(l => l.msg === 'decision').length >= 1 + methods.length * 2)
  const decisions = lines().filter(l => l.msg === 'decision')
  for (const method of methods) {
    const mine = decisions.filter(l => l.method === method)
    t.equal(mine.length, 2, `${method}: one decision line per request, naming the method sent`)
    t.match(mine[0], { status: 405, reason: 'method_not_allowed', route: 'pub' }, `${method}: 405 method_not_allowed on the route`)
  }
  t.same(lines().filter(l => l.level >= 40).map(l => l.msg), [], 'no warning or error line (two warn lines a request before)')
})

t.test('over HTTP/1.1, a method Fastify knows and the gateway does not forward is a 405 on a route', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const config = baseConfig(key, [
    { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' },
    { name: 'closed', prefix: '/closed', upstream: upstream.url, auth: 'public', cors: false },
  ])
  config.cors = { origins: [APP] }
  const gw = await startGateway(t, config)
  for (const method of ['PROPFIND', 'PURGE', 'MKCOL', 'TRACE']) {
    const res = await rawRequest(gw.url, requestBytes(method, '/pub/x', [['Host', 'gw.test'], ['Origin', APP], ['Content-Length', '0']]))
    t.equal(res.status, 405, `${method}: 405 (it was a 404 route_not_found)`)
    t.equal(res.headers.allow, 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS', `${method}: the route's Allow`)
    t.equal(res.headers['access-control-allow-origin'], APP, `${method}: a CORS route's refusal carries its CORS headers`)
    const closed = await rawRequest(gw.url, requestBytes(method, '/closed/x', [['Host', 'gw.test'], ['Origin', APP], ['Content-Length', '0']]))
    t.equal(closed.status, 405, `${method} on a cors: false route: 405`)
    t.equal(closed.headers['access-control-allow-origin'], undefined, `${method} on a cors: false route: no CORS header, as for its other answers`)
  }
  t.equal(upstream.requests.length, 0, 'the upstream saw none of them')
})

t.test('on the auth endpoints, every method but POST is a 405 with Allow: POST, whatever the protocol', async (t) => {
  // they were the proxy's 404 route_not_found (the endpoints took only the seven forwarded methods)
  const cert = testCertificate(t)
  const store = await openStore({ dataDir: 'memory://' })
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (c, _e, cb) { out += String(c); cb() } }))
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'public' }], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }), { logger, store })
  const session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
  t.teardown(() => session.close())
  const methods = ['PROPFIND', 'TRACE', 'PURGE', 'FOO', 'delete', 'GET']
  for (const path of ['/auth/login', '/auth/logout']) {
    for (const method of methods) {
      const { status, headers, body } = await h2Request(session, { ':method': method, ':path': path })
      t.same({ status, allow: headers.allow, code: JSON.parse(body).code }, { status: 405, allow: 'POST', code: 'method_not_allowed' }, `${method} ${path}: 405, Allow: POST`)
    }
  }
  const bad = await h2Request(session, { ':method': 'POST', ':path': '/auth/login', 'content-type': 'application/json' }, '{"username":"nobody","password":"x"}')
  t.equal(bad.status, 401, 'control: POST reaches the endpoint')
  const lines = (): Line[] => out.trim().split('\n').filter(Boolean).map(l => JSON.parse(l))
  await until('every decision line written', () => lines().filter(l => l.msg === 'decision').length >= 2 * methods.length + 1)
  const decisions = lines().filter(l => l.msg === 'decision')
  for (const method of methods) {
    t.same(decisions.filter(l => l.method === method).map(l => [l.status, l.reason, l.route]), [[405, 'method_not_allowed', 'auth.login'], [405, 'method_not_allowed', 'auth.logout']], `${method}: its decision lines name the method sent and the endpoint`)
  }
  t.equal(upstream.requests.length, 0, 'the upstream saw none of them')
  t.same(lines().filter(l => l.level >= 40).map(l => l.msg), [], 'no warning or error line')
})
