import t from 'tap'
import { connect as h2connect } from 'node:http2'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { testCertificate } from '../fixtures/tls.js'

// Issue 8, item 2: requests a server behind the gateway could read differently from the way
// the gateway read them were proxied (Node keeps the first copy of Host and Authorization):
// two Host headers, a Host that is not host[:port], two `Authorization: Bearer` lines.
// RFC 9112 §3.2 and RFC 6750 §2 make these 400s; none may reach the upstream.

const key = makeKey('EdDSA')

t.test('ambiguous requests are refused at the edge, on every kind of route, and never proxied', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required' },
  ]))
  const good = `Bearer ${signWith(key, goodClaims())}`
  const other = `Bearer ${signWith(key, goodClaims({ sub: 'mallory' }))}`

  const rows: Array<[name: string, path: string, headers: Array<[string, string]>, status: number, code: string | undefined]> = [
    ['two Host headers', '/open/x', [['Host', 'a.example'], ['Host', 'b.example']], 400, 'bad_host'],
    ['two Host headers, same value', '/open/x', [['Host', 'a.example'], ['host', 'a.example']], 400, 'bad_host'],
    ['Host: bad host', '/open/x', [['Host', 'bad host']], 400, 'bad_host'],
    ['Host with a path', '/open/x', [['Host', '127.0.0.1:8080/admin']], 400, 'bad_host'],
    ['Host with userinfo', '/open/x', [['Host', 'user@a.example']], 400, 'bad_host'],
    ['Host with a query', '/open/x', [['Host', 'a.example?x']], 400, 'bad_host'],
    ['Host with a non-numeric port', '/open/x', [['Host', 'a.example:80x']], 400, 'bad_host'],
    ['empty Host', '/open/x', [['Host', '']], 400, 'bad_host'],
    ['two Authorization: Bearer lines', '/orders/x', [['Host', 'a.example'], ['Authorization', good], ['Authorization', other]], 400, 'duplicate_header'],
    ['two Authorization lines, different case', '/orders/x', [['Host', 'a.example'], ['authorization', good], ['AUTHORIZATION', good]], 400, 'duplicate_header'],
    ['two Authorization lines on a public route', '/open/x', [['Host', 'a.example'], ['Authorization', good], ['Authorization', other]], 400, 'duplicate_header'],
    ['two Content-Type lines', '/open/x', [['Host', 'a.example'], ['Content-Type', 'text/plain'], ['Content-Type', 'application/json']], 400, 'duplicate_header'],
    // Node's own parser answers these (before the gateway sees the request): still never proxied
    ['no Host in HTTP/1.1', '/open/x', [], 400, undefined],
  ]
  for (const [name, path, headers, status, code] of rows) {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes('GET', path, headers))
    t.equal(res.status, status, `${name}: ${status}`)
    if (code !== undefined) t.equal(res.json().code, code, `${name}: code ${code}`)
    t.equal(upstream.requests.length, before, `${name}: the upstream never saw it`)
  }

  const auth = await rawRequest(gw.url, requestBytes('GET', '/orders/x', [['Host', 'a.example'], ['Authorization', good], ['Authorization', other]]))
  t.equal(auth.json().error, 'invalid_request', 'two credentials: RFC 6750 invalid_request')
  t.match(auth.headers['www-authenticate'], /error="invalid_request"/, 'with the challenge')

  // what stays allowed: one Host with a port, an IPv6 literal, one Authorization
  const allowed: Array<[string, string, Array<[string, string]>]> = [
    ['a host with a port', '/open/x', [['Host', 'shop.example:8443']]],
    ['an IPv6 literal', '/open/x', [['Host', '[::1]:8080']]],
    ['one Authorization', '/orders/x', [['Host', 'a.example'], ['Authorization', good]]],
  ]
  for (const [name, path, headers] of allowed) {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes('GET', path, headers))
    t.equal(res.status, 200, `${name}: proxied`)
    t.equal(upstream.requests.length, before + 1, `${name}: the upstream saw it`)
  }
})

t.test('the gateway\'s own endpoints refuse them too (the edge stage runs for every request)', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const res = await rawRequest(gw.url, requestBytes('GET', '/.well-known/jwks.json', [['Host', 'a.example'], ['Host', 'b.example']]))
  t.equal(res.status, 400)
  t.equal(res.json().code, 'bad_host')
})

t.test('HTTP/2: a Host beside :authority must name the same host; :authority is checked like Host', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const cert = testCertificate(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }], {
    server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true },
  }))
  const session = h2connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem })
  t.teardown(() => session.close())
  const get = (headers: Record<string, string>): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
    const stream = session.request({ ':path': '/open/x', ...headers })
    let status = 0
    let body = ''
    stream.on('response', (h) => { status = Number(h[':status']) })
    stream.on('data', (c: Buffer) => { body += c.toString() })
    stream.on('end', () => resolve({ status, body }))
    // nghttp2 resets a stream whose :authority it cannot parse: refused before the gateway
    stream.on('error', (err: NodeJS.ErrnoException) => { if (err.code === 'ERR_HTTP2_STREAM_ERROR') resolve({ status: 0, body: '' }); else reject(err) })
    stream.end()
  })
  const rows: Array<[name: string, headers: Record<string, string>, status: number]> = [
    ['Host naming another host than :authority', { ':authority': 'a.example', host: 'b.example' }, 400],
    [':authority with a non-numeric port', { ':authority': 'a.example:80x' }, 400],
    [':authority with userinfo', { ':authority': 'user@a.example' }, 400],
    ['Host equal to :authority (any case)', { ':authority': 'a.example', host: 'A.Example' }, 200],
    [':authority alone', { ':authority': 'a.example:8443' }, 200],
  ]
  for (const [name, headers, status] of rows) {
    const before = upstream.requests.length
    const res = await get(headers)
    t.ok(res.status === status || (status === 400 && res.status === 0), `${name}: ${status}${res.status === 0 ? ' (nghttp2 reset the stream)' : ''}`)
    if (status === 400 && res.status === 400) t.equal(JSON.parse(res.body).code, 'bad_host', `${name}: bad_host`)
    if (status === 400) t.equal(upstream.requests.length, before, `${name}: never proxied`)
  }
})
