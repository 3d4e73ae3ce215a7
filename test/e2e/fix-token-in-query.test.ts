import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'

// Issue 8, item 3: `?access_token=…` (RFC 6750 §2.3) beside or instead of the Authorization
// header was passed to the upstream, and into its access logs. On routes that look at tokens
// (required, optional) it is a 400 invalid_request (RFC 6750 §2: one method per request),
// whatever the case or percent-encoding of the parameter's name, and never forwarded.

const key = makeKey('EdDSA')

t.test('a token in the query is refused on required and optional routes, never forwarded', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required' },
    { name: 'maybe', prefix: '/maybe', upstream: upstream.url, auth: 'optional' },
  ]))
  const token = signWith(key, goodClaims())
  const bearer = { authorization: `Bearer ${token}` }
  const rows: Array<[name: string, path: string, headers: Record<string, string>]> = [
    ['required, query only', `/orders/x?access_token=${token}`, {}],
    ['required, query and header', `/orders/x?access_token=${token}`, bearer],
    ['required, second parameter', `/orders/x?page=2&access_token=${token}`, bearer],
    ['required, upper-case name', `/orders/x?ACCESS_TOKEN=${token}`, bearer],
    ['required, percent-encoded name', `/orders/x?access%5Ftoken=${token}`, bearer],
    ['required, percent-encoded letters', `/orders/x?%61ccess_token=${token}`, bearer],
    ['required, empty value', '/orders/x?access_token=', bearer],
    ['required, bare name', '/orders/x?access_token', bearer],
    ['optional, query only', `/maybe/x?access_token=${token}`, {}],
    ['optional, query and header', `/maybe/x?access_token=${token}`, bearer],
  ]
  for (const [name, path, headers] of rows) {
    const before = upstream.requests.length
    const res = await raw(gw.url, path, { headers })
    t.equal(res.status, 400, `${name}: 400`)
    t.equal(res.json().code, 'token_in_query', `${name}: code token_in_query`)
    t.equal(res.json().error, 'invalid_request', `${name}: RFC 6750 invalid_request`)
    t.match(res.headers['www-authenticate'], /error="invalid_request"/, `${name}: challenge says invalid_request`)
    t.equal(upstream.requests.length, before, `${name}: the upstream never saw it`)
  }

  // parameters that only look alike pass
  for (const path of ['/orders/x?access_token_hint=1', '/orders/x?my_access_token=1', '/orders/x?q=access_token']) {
    const before = upstream.requests.length
    const res = await raw(gw.url, path, { headers: bearer })
    t.equal(res.status, 200, `${path}: proxied`)
    t.equal(upstream.requests[before]?.url, path, `${path}: query forwarded unchanged`)
  }
})

t.test('on a public route the query is the upstream\'s business (the gateway reads no token there)', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const res = await raw(gw.url, '/open/x?access_token=abc')
  t.equal(res.status, 200)
  t.equal(upstream.requests[0]?.url, '/open/x?access_token=abc')
})
