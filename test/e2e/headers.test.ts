import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, PUBLIC_SCHEME, raw, signWith, startGateway } from '../fixtures/gateway.js'

// The upstream's contract: whatever the client sends under the reserved prefix (any case,
// repeated, underscores) never arrives; the identity comes only from the verified token.

const key = makeKey('EdDSA')

function countRaw (rawHeaders: string[], name: string): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) n++
  return n
}

t.test('spoofed identity headers never reach the upstream, on every kind of route', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'private', prefix: '/private', upstream: upstream.url, auth: 'required' },
    { name: 'maybe', prefix: '/maybe', upstream: upstream.url, auth: 'optional' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
  ], { identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes', tenant: 'x-tenant' }, claimsHeader: 'x-user-claims' } }))
  const token = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read orders:write' }))
  const spoof: Array<[string, string]> = [
    ['X-User-Id', 'mallory'], ['x-user-id', 'mallory2'], ['X-USER-ID', 'mallory3'],
    ['x_user_id', 'underscore'], ['X_User_Scopes', 'admin'], ['x-user-scopes', 'admin'],
    ['x-user-admin', 'true'], ['x-tenant', 'evil-corp'], ['x-user-claims', 'e30'],
  ]
  for (const [path, withToken] of [['/private/a', true], ['/maybe/a', true], ['/maybe/a', false], ['/open/a', true], ['/open/a', false]] as const) {
    upstream.requests.length = 0
    const headers: Array<[string, string]> = [...spoof]
    if (withToken) headers.push(['authorization', `Bearer ${token}`])
    const res = await raw(gw.url, path, { headers })
    t.equal(res.status, 200, `${path} token=${withToken}: passes`)
    const got = upstream.requests[0]!
    const identified = withToken && !path.startsWith('/open')
    for (const name of ['x-user-id', 'x-user-scopes', 'x-tenant', 'x-user-claims']) {
      t.equal(countRaw(got.rawHeaders, name), identified && name !== 'x-tenant' ? 1 : 0, `${path} token=${withToken}: ${name} count`)
    }
    t.equal(countRaw(got.rawHeaders, 'x_user_id'), 0, 'underscore variant dropped')
    t.equal(countRaw(got.rawHeaders, 'x-user-admin'), 0, 'any x-user-* dropped')
    t.equal(got.headers.authorization, undefined, 'Authorization is not forwarded by default')
    if (identified) {
      t.equal(got.headers['x-user-id'], 'alice', 'x-user-id from the token')
      t.equal(got.headers['x-user-scopes'], 'orders:read orders:write', 'x-user-scopes from the token')
      const claims = JSON.parse(Buffer.from(String(got.headers['x-user-claims']), 'base64url').toString())
      t.equal(claims.sub, 'alice', 'x-user-claims carries the verified claims')
    }
  }
})

t.test('claim values become header text by the contract; Connection cannot remove injected headers', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], {
    identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes', n: 'x-user-n', b: 'x-user-b', roles: 'x-user-roles', org: 'x-user-org', name: 'x-user-name', missing: 'x-user-missing' } },
  }))
  const token = signWith(key, goodClaims({ n: 42, b: false, roles: ['a', 'b'], org: { id: 7, name: 'x' }, name: 'José' }))
  const res = await raw(gw.url, '/api/x', {
    headers: [
      ['authorization', `Bearer ${token}`],
      ['connection', 'x-user-id, x-forwarded-for, x-request-id, keep-alive'],
      ['keep-alive', 'timeout=5'],
      ['x-user-missing', 'spoofed'],
    ],
  })
  t.equal(res.status, 200)
  const got = upstream.requests[0]!.headers
  t.equal(got['x-user-id'], 'alice', 'a Connection-nominated injected header survives')
  t.equal(got['x-user-n'], '42', 'number as text')
  t.equal(got['x-user-b'], 'false', 'boolean as text')
  t.equal(got['x-user-roles'], '["a","b"]', 'array as compact JSON')
  t.equal(got['x-user-org'], '{"id":7,"name":"x"}', 'object as compact JSON')
  t.equal(Buffer.from(String(got['x-user-name']), 'latin1').toString('utf8'), 'José', 'non-ASCII arrives as UTF-8 bytes')
  t.equal(got['x-user-missing'], undefined, 'a missing claim sets no header, and the client copy is dropped')
  t.equal(got['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for set by the gateway')
  t.ok(got['x-request-id'], 'x-request-id set')
  t.equal(got['keep-alive'], undefined, 'hop-by-hop keep-alive dropped')
})

t.test('x-forwarded-* are trusted only from configured proxies', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]
  const untrusting = await startGateway(t, baseConfig(key, routes))
  const trusting = await startGateway(t, baseConfig(key, routes, { server: { trustProxy: ['127.0.0.1/32'] } }))
  const elsewhere = await startGateway(t, baseConfig(key, routes, { server: { trustProxy: ['10.0.0.0/8'] } }))
  const forged = { 'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'evil.test', forwarded: 'for=6.6.6.6', 'x-real-ip': '6.6.6.6' }
  for (const [gw, trusted] of [[untrusting, false], [trusting, true], [elsewhere, false]] as const) {
    upstream.requests.length = 0
    await raw(gw.url, '/open/x', { headers: { ...forged, host: 'app.test' } })
    const got = upstream.requests[0]!.headers
    if (trusted) {
      t.equal(got['x-forwarded-for'], '6.6.6.6, 127.0.0.1', 'trusted: chain appended')
      t.equal(got['x-forwarded-proto'], 'https', 'trusted: proto kept')
      t.equal(got['x-forwarded-host'], 'evil.test', 'trusted: host kept')
    } else {
      t.equal(got['x-forwarded-for'], '127.0.0.1', 'untrusted: replaced by the peer address')
      t.equal(got['x-forwarded-proto'], PUBLIC_SCHEME, 'untrusted: the real protocol')
      t.equal(got['x-forwarded-host'], 'app.test', 'untrusted: the real Host')
      t.equal(got.forwarded, undefined, 'untrusted: Forwarded dropped')
      t.equal(got['x-real-ip'], undefined, 'untrusted: X-Real-IP dropped')
    }
  }
})

t.test('Authorization and the refresh cookie are forwarded only when configured', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]
  const token = signWith(key, goodClaims())
  const cookie = '__Host-portcullis-rt=SECRET; theme=dark; other=1'
  const strict = await startGateway(t, baseConfig(key, routes))
  await raw(strict.url, '/api/x', { headers: { authorization: `Bearer ${token}`, cookie } })
  t.equal(upstream.requests[0]!.headers.authorization, undefined)
  t.equal(upstream.requests[0]!.headers.cookie, 'theme=dark; other=1', 'refresh cookie removed, others kept')
  const onlyRefresh = await raw(strict.url, '/api/x', { headers: { authorization: `Bearer ${token}`, cookie: '__Host-portcullis-rt=SECRET' } })
  t.equal(onlyRefresh.status, 200)
  t.equal(upstream.requests[1]!.headers.cookie, undefined, 'no empty cookie header left behind')

  const open = await startGateway(t, baseConfig(key, routes, { identity: { forwardAuthorization: true, forwardRefreshCookie: true } }))
  upstream.requests.length = 0
  await raw(open.url, '/api/x', { headers: { authorization: `Bearer ${token}`, cookie } })
  t.equal(upstream.requests[0]!.headers.authorization, `Bearer ${token}`)
  t.equal(upstream.requests[0]!.headers.cookie, cookie)
})

t.test('an upstream cannot plant the refresh cookie; response hop-by-hop headers are dropped', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('set-cookie', ['__Host-portcullis-rt=planted; Path=/; Secure', 'theme=dark'])
    res.setHeader('x-internal', 'secret')
    res.setHeader('connection', 'x-internal')
    res.end('ok')
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const res = await raw(gw.url, '/open/x', { headers: { 'x-request-id': 'abc-123' } })
  t.equal(res.status, 200)
  t.same(res.headers['set-cookie'], ['theme=dark; Path=/open'], 'the other cookie passes, kept under the route')
  t.equal(res.headers['x-internal'], undefined, 'a header the upstream named in Connection is dropped')
  t.equal(res.headers['x-request-id'], 'abc-123', 'request id echoed')
  t.equal(upstream.requests[0]!.headers['x-request-id'], 'abc-123', 'request id propagated')
})
