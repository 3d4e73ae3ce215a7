import type { AddressInfo } from 'node:net'
import { createServer } from 'node:http'
import t from 'tap'
import { baseConfig, goodClaims, ISSUER, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { buildOrders } from '../../examples/upstream/app.js'
import { getWith } from './helpers.js'

// The example upstream (examples/upstream) behind a real gateway, as its README describes it.

const key = makeKey('EdDSA')

t.test('examples/upstream behind the gateway', async (t) => {
  const probe = createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const port = (probe.address() as AddressInfo).port
  await new Promise<void>(resolve => probe.close(() => resolve()))

  const gw = await startGateway(t, baseConfig(key, [{
    name: 'orders',
    prefix: '/api/orders',
    upstream: `http://127.0.0.1:${port}`,
    rewritePrefix: '/orders',
    auth: 'required',
    scopes: { GET: ['orders:read'], '*': ['orders:write'] },
    assertion: { audience: 'https://orders.internal' },
  }], { identity: { assertion: { header: 'x-portcullis-assertion', lifetime: '5m' } } }))
  const app = await buildOrders({ jwksUrl: `${gw.url}/.well-known/jwks.json`, issuer: ISSUER, audience: 'https://orders.internal', algorithm: 'EdDSA', allowInsecureHttp: true })
  await app.listen({ host: '127.0.0.1', port })
  t.teardown(() => app.close())
  const service = `http://127.0.0.1:${port}`

  const reader = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' }))
  const list = await getWith(gw.url, '/api/orders', reader)
  t.equal(list.status, 200, list.body)
  t.same(list.json(), { caller: { sub: 'alice', scopes: ['orders:read'], issuedBy: ISSUER }, orders: [] })

  const writer = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read orders:write' }))
  const created = await raw(gw.url, '/api/orders', { method: 'POST', headers: { authorization: `Bearer ${writer}`, 'content-type': 'application/json' }, body: '{"item":"book"}' })
  t.equal(created.status, 201, created.body)
  t.match(created.json(), { owner: 'alice', item: 'book' })
  t.equal((await getWith(gw.url, '/api/orders', reader)).json().orders.length, 1)

  const direct = await getWith(service, '/orders', undefined)
  t.equal(direct.status, 401, 'straight to the service, no assertion: refused')
  t.equal(direct.json().code, 'missing_token')
  t.same((await getWith(service, '/healthz', undefined)).json(), { status: 'ok', gatewayKeys: 'ready' })
})
