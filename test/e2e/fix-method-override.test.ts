import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'

// Issue 8, item 4: `GET` + `X-HTTP-Method-Override: DELETE` was authorized as a GET and
// reached the upstream with the header; frameworks that honour it ran a DELETE nobody
// authorized. The method that was authorized is the method that runs: the override headers
// are removed on every route, in any case, repeated, or with `_` for `-`.

const key = makeKey('EdDSA')
const OVERRIDES = ['X-HTTP-Method-Override', 'X-HTTP-Method', 'X-Method-Override']

function names (rawHeaders: string[]): string[] {
  return rawHeaders.filter((_h, i) => i % 2 === 0).map(h => h.toLowerCase())
}

t.test('method-override headers never reach the upstream', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', scopes: { GET: ['orders:read'], DELETE: ['orders:admin'], '*': ['orders:write'] } },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
  ]))
  const readOnly = `Bearer ${signWith(key, goodClaims({ scope: 'orders:read' }))}`
  const variants: Array<Array<[string, string]>> = [
    ...OVERRIDES.map(n => [[n, 'DELETE']] as Array<[string, string]>),
    ...OVERRIDES.map(n => [[n.toUpperCase(), 'DELETE']] as Array<[string, string]>),
    ...OVERRIDES.map(n => [[n.replaceAll('-', '_'), 'DELETE']] as Array<[string, string]>),
    OVERRIDES.map(n => [n, 'DELETE'] as [string, string]),
    [['X-HTTP-Method-Override', 'DELETE'], ['x-http-method-override', 'PUT']],
  ]
  for (const [path, auth] of [['/orders/1', readOnly], ['/open/1', undefined]] as const) {
    for (const v of variants) {
      const label = `${path} ${v.map(h => h[0]).join('+')}`
      const before = upstream.requests.length
      const headers: Array<[string, string]> = [...v]
      if (auth !== undefined) headers.push(['authorization', auth])
      const res = await raw(gw.url, path, { headers })
      t.equal(res.status, 200, `${label}: authorized as the GET it is`)
      const got = upstream.requests[before]
      if (got === undefined) { t.fail(`${label}: not proxied`); continue }
      t.equal(got.method, 'GET', `${label}: the upstream runs a GET`)
      const seen = names(got.rawHeaders).map(n => n.replaceAll('_', '-'))
      t.notOk(seen.some(n => OVERRIDES.map(o => o.toLowerCase()).includes(n)), `${label}: no override header upstream`)
    }
  }

  // the real DELETE is still judged as a DELETE
  const del = await raw(gw.url, '/orders/1', { method: 'DELETE', headers: { authorization: readOnly } })
  t.equal(del.status, 403, 'a DELETE with a read-only token is refused')
  t.equal(del.json().code, 'insufficient_scope')
})
