import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'

// The path that is authorized is exactly the path that is forwarded: no encoding, dot
// segment, slash or case trick reaches a protected prefix through a public one, or leaves
// the upstream prefix. Ambiguous paths are refused with 400 before any routing decision.

t.test('path tricks cannot cross from a public route into a protected one', async (t) => {
  const key = makeKey('EdDSA')
  const publicUp = await startUpstream()
  const adminUp = await startUpstream()
  t.teardown(() => publicUp.close())
  t.teardown(() => adminUp.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'admin', prefix: '/api/admin', upstream: adminUp.url, rewritePrefix: '/admin', auth: 'required', scopes: { '*': ['admin'] } },
    { name: 'api', prefix: '/api', upstream: publicUp.url, rewritePrefix: '/pub', auth: 'public' },
  ]))
  const userToken = signWith(key, goodClaims({ scope: 'orders:read' }))

  const refused400 = [
    '/api/public/../admin/users',
    '/api/public/%2e%2e/admin/users',
    '/api/public/%2E%2E/admin/users',
    '/api/public/.%2e/admin/users',
    '/api/public/%252e%252e/admin/users',
    '/api/./admin/users',
    '/api/%2e/admin/users',
    '/api%2fadmin/users',
    '/api%2Fadmin/users',
    '/api/public%5c..%5cadmin',
    '/api\\..\\admin',
    '/api//admin/users',
    '/api/admin;x=1/users',
    '/api;/admin/users',
    '/api/%61dmin/users',
    '/api/ad%6Din/users',
    '/api/admin%00/users',
    '/api/admin/users%',
    '/api/admin/users%zz',
    '/api/..',
    'api/admin',
  ]
  for (const path of refused400) {
    const res = await raw(gw.url, path, { headers: { authorization: `Bearer ${userToken}` } })
    t.equal(res.status, 400, `${path}: refused`)
    // a request line Node's parser refuses outright is bad_request; everything else path_rejected
    t.equal(res.json().code, path.startsWith('/') ? 'path_rejected' : 'bad_request', `${path}: code`)
  }
  t.equal(adminUp.requests.length, 0, 'the admin upstream saw nothing')
  t.equal(publicUp.requests.length, 0, 'the public upstream saw nothing either')

  // case tricks match the protected route (matching ignores case), so they need the scope
  for (const path of ['/API/ADMIN/users', '/Api/Admin/users', '/api/ADMIN']) {
    const res = await raw(gw.url, path, { headers: { authorization: `Bearer ${userToken}` } })
    t.equal(res.status, 403, `${path}: routed to the protected route, scope enforced`)
    const anonymous = await raw(gw.url, path)
    t.equal(anonymous.status, 401, `${path}: anonymous refused`)
  }
  t.equal(adminUp.requests.length, 0)
  t.equal(publicUp.requests.length, 0)

  // a segment that merely starts like the protected prefix is not under it
  const lookalike = await raw(gw.url, '/api/administrator')
  t.equal(lookalike.status, 200, '/api/administrator belongs to the public route')
  t.equal(publicUp.requests.at(-1)?.url, '/pub/administrator')

  // the admin with the scope gets exactly the authorized path, rewritten
  const adminToken = signWith(key, goodClaims({ scope: 'admin' }))
  const ok = await raw(gw.url, '/api/admin/users?id=1', { headers: { authorization: `Bearer ${adminToken}` } })
  t.equal(ok.status, 200)
  t.equal(adminUp.requests.at(-1)?.url, '/admin/users?id=1', 'forwarded path = authorized path, rewritten')
  const encodedOk = await raw(gw.url, '/api/admin/a%20b', { headers: { authorization: `Bearer ${adminToken}` } })
  t.equal(encodedOk.status, 200, 'ordinary percent-encoding (space) is fine')
  t.equal(adminUp.requests.at(-1)?.url, '/admin/a%20b', 'and is forwarded untouched')
})

t.test('unmatched paths are 404 and never proxied', async (t) => {
  const key = makeKey('EdDSA')
  const up = await startUpstream()
  t.teardown(() => up.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: up.url, auth: 'public' }]))
  for (const path of ['/', '/api', '/api/ordersX', '/api/order', '/other/api/orders']) {
    const res = await raw(gw.url, path)
    t.equal(res.status, 404, path)
    t.equal(res.json().code, 'route_not_found', path)
  }
  t.equal(up.requests.length, 0)
})
