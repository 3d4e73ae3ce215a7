import t from 'tap'
import { connect } from 'node:http2'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { testCertificate } from '../fixtures/tls.js'
import { h2Request, type H2Response } from '../fixtures/h2-client.js'
import { RawClient, rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Found by a hostile review of the HTTP/2, TLS and WebSocket edge (stop 33), each reproduced
// against a real gateway on 127.0.0.1:
// - fix-query-fragment-and-raw-bytes: the path check looked only before `?`. A `#` in the
//   query (`/ws/x?a#b`) made a WebSocket upgrade a 500 with an error-level log line and a
//   stack trace (the `ws` client refuses a URL with a fragment) — a client could write error
//   lines at will — and a plain route forwarded it raw. Over HTTP/2 raw bytes above 0x7F in
//   the query (`?\xc5\xbfmethod=DELETE`) were forwarded re-encoded as UTF-8 — neither the
//   client's bytes nor what was checked — where HTTP/1.1's parser refuses them. Now both are a
//   400 `path_rejected` before any route.
// - fix-refused-upgrade-says-close: a refused WebSocket upgrade (401, 400…) answered
//   `Connection: keep-alive` and then closed the socket, so a client's next request on it was
//   lost without an answer. Now the refusal says `Connection: close`.

const key = makeKey('EdDSA')
const bearer = (): string => `Bearer ${signWith(key, goodClaims())}`

t.test('fix-query-fragment-and-raw-bytes over HTTP/1.1: a # in the query is refused, plain and WebSocket', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const ws = await startWsUpstream()
  t.teardown(() => ws.close())
  let logs = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { logs += String(chunk); done() } }))
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' },
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'live', prefix: '/live', upstream: ws.url, websocket: true, auth: 'public' },
    { name: 'chat', prefix: '/chat', upstream: ws.url, websocket: true, auth: 'required' },
  ]), { logger })
  const send = async (method: string, target: string, headers: Array<[string, string]> = []): Promise<{ status: number, code: unknown }> => {
    const res = await rawRequest(gw.url, requestBytes(method, target, [['Host', 'gateway.test'], ...headers]))
    const body = res.body.toString()
    return { status: res.status, code: body.startsWith('{') ? JSON.parse(body).code : undefined }
  }
  const upgrade: Array<[string, string]> = [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==']]

  t.same(await send('GET', '/pub/x?a=1'), { status: 200, code: undefined }, 'control: a plain query passes')
  t.same(await send('GET', '/pub/x?a=%23'), { status: 200, code: undefined }, 'control: an encoded # passes')
  const seen = upstream.requests.length
  for (const [label, method, target, headers] of [
    ['a public route', 'GET', '/pub/x?a#b', []],
    ['a public route, # first', 'GET', '/pub/x?#', []],
    ['a token route', 'GET', '/api/x?q=1#frag', [['Authorization', bearer()]]],
    ['a POST', 'POST', '/pub/x?a#b', [['Content-Length', '0']]],
  ] as Array<[string, string, string, Array<[string, string]>]>) {
    t.same(await send(method, target, headers), { status: 400, code: 'path_rejected' }, `${label}: 400 path_rejected (it was forwarded raw)`)
  }
  t.equal(upstream.requests.length, seen, 'the upstream saw none of them')

  for (const [label, target, headers] of [
    ['a public WebSocket route', '/live/x?a#b', upgrade],
    ['a token WebSocket route', '/chat/x?a#b', [...upgrade, ['Authorization', bearer()]]],
  ] as Array<[string, string, Array<[string, string]>]>) {
    t.same(await send('GET', target, headers), { status: 400, code: 'path_rejected' }, `${label}: 400 path_rejected (it was a 500)`)
  }
  t.notMatch(logs, /"level":(50|60)/, 'no error line in the log (each one wrote a stack trace)')
  t.equal(ws.upgrades.length, 0, 'the WebSocket upstream saw no handshake')
})

t.test('fix-query-fragment-and-raw-bytes over HTTP/2: raw bytes and a # in the query are refused', async (t) => {
  const cert = testCertificate(t)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' },
  ], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }))
  const session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
  t.teardown(() => session.close())
  const get = async (path: string): Promise<H2Response> => await h2Request(session, { ':method': 'GET', ':path': path })
  t.equal((await get('/pub/x?y=%C5%BF')).status, 200, 'control: the same bytes percent-encoded pass')
  const seen = upstream.requests.length
  // each string's characters are the bytes on the wire (latin1)
  for (const [label, path] of [
    ['raw UTF-8 ſ before method=', '/pub/x?\xc5\xbfmethod=DELETE'],
    ['a raw 0x80 in a value', '/pub/x?y=\x80'],
    ['a latin1 é', '/pub/x?q=caf\xe9'],
    ['a fragment', '/pub/x?a#b'],
  ]) {
    const res = await get(path as string)
    t.equal(res.status, 400, `${label}: 400 (it was forwarded re-encoded)`)
    t.equal(res.body.startsWith('{') ? JSON.parse(res.body).code : undefined, 'path_rejected', `${label}: path_rejected`)
  }
  t.equal(upstream.requests.length, seen, 'the upstream saw none of them')
})

t.test('fix-refused-upgrade-says-close: a refused upgrade answers Connection: close', async (t) => {
  const ws = await startWsUpstream()
  t.teardown(() => ws.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'chat', prefix: '/chat', upstream: ws.url, websocket: true, auth: 'required' },
    { name: 'plain', prefix: '/plain', upstream: ws.url, auth: 'public' },
  ]))
  const upgrade: Array<[string, string]> = [['Host', 'gateway.test'], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==']]
  for (const [label, target, status] of [
    ['no token on a token route', '/chat/x', 401],
    ['an upgrade to a route without WebSockets', '/plain/x', 400],
    ['a fragment in the query', '/chat/x?a#b', 400],
  ] as Array<[string, string, number]>) {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.socket.destroy())
    await client.send(requestBytes('GET', target, upgrade))
    const res = await client.response()
    t.equal(res.status, status, `${label}: ${status}`)
    t.equal(res.headers.connection, 'close', `${label}: Connection: close (it said keep-alive)`)
    t.equal(await client.closed, 'end', `${label}: and the connection ends`)
  }
})
