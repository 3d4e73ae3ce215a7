import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { stringify } from 'yaml'
import { baseConfig, goodClaims, ISSUER, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { IDP_CLIENT_ID, startIdp } from '../fixtures/idp.js'
import { loadConfigText } from '../../src/config/load.js'
import portcullis from '../../src/upstream/index.js'
import { getWith, idpIssuer, waitFor } from '../upstream/helpers.js'

// Identity in to identity out, whole: a client's token (ours or the IdP's) → the gateway
// verifies it and signs an assertion for the route's upstream → the upstream, a Fastify app
// with the upstream kit (src/upstream, on @fastify/jwt), verifies that assertion against the
// gateway's JWKS and answers with request.user. The kit refuses every assertion the gateway
// did not make for it: forged, expired, for another audience, an access token in its place.

const key = makeKey('EdDSA')
const HEADER = 'x-portcullis-assertion'
const ORDERS = 'https://orders.internal'
const BILLING = 'https://billing.internal'

/** a free port on 127.0.0.1 for the upstream, so the gateway config can name it before it listens */
async function freePort (): Promise<number> {
  const s = createServer()
  await new Promise<void>(resolve => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as AddressInfo
  await new Promise<void>(resolve => s.close(() => resolve()))
  return port
}

/** the example upstream: orders, behind the gateway, verifying with the kit */
async function ordersService (t: Test, port: number, gatewayUrl: string): Promise<FastifyInstance> {
  const app = Fastify()
  await app.register(portcullis, {
    jwksUrl: `${gatewayUrl}/.well-known/jwks.json`,
    allowInsecureHttp: true, // loopback in tests; https in production
    issuer: ISSUER,
    audience: ORDERS,
    algorithms: ['EdDSA'],
    cooldownMs: 200,
  })
  app.get('/orders/:id', async (request) => ({
    id: (request.params as { id: string }).id,
    sub: request.user.sub,
    scopes: request.user.scopes,
    tokenIssuer: request.user.token_iss,
    tenant: request.user.tenant,
  }))
  await app.listen({ port, host: '127.0.0.1' })
  t.teardown(() => app.close())
  return app
}

async function setup (t: Test, extra: { issuers?: unknown[] } = {}) {
  const port = await freePort()
  const recorder = await startUpstream()
  t.teardown(() => recorder.close())
  const config: Record<string, any> = {
    ...baseConfig(key, [
      { name: 'orders', prefix: '/orders', upstream: `http://127.0.0.1:${port}`, auth: 'required', assertion: { audience: ORDERS } },
      { name: 'billing', prefix: '/billing', upstream: recorder.url, auth: 'required', assertion: { audience: BILLING } },
    ], { identity: { assertion: { header: HEADER, lifetime: '5m' } } }),
    issuers: extra.issuers ?? [],
  }
  const gw = await startGateway(t, config)
  const service = await ordersService(t, port, gw.url)
  return { gw, config, recorder, service, serviceUrl: `http://127.0.0.1:${port}` }
}

t.test('the upstream kit verifies the assertion end to end: our tokens and the IdP\'s', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const { gw, service } = await setup(t, { issuers: [idpIssuer(idp)] })
  t.equal(service.portcullisUpstream.keys?.state, 'ready', "the kit fetched the gateway's JWKS at start")

  const own = await getWith(gw.url, '/orders/42', signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read orders:write', tenant: 't-1' })))
  t.equal(own.status, 200, own.body)
  t.same(own.json(), { id: '42', sub: 'alice', scopes: ['orders:read', 'orders:write'], tokenIssuer: ISSUER, tenant: 't-1' }, 'request.user from the verified assertion')

  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'))
  const fromIdp = await getWith(gw.url, '/orders/7', await idp.issueToken({ scope: 'orders:read admin' }))
  t.equal(fromIdp.status, 200, fromIdp.body)
  t.match(fromIdp.json(), { sub: IDP_CLIENT_ID, scopes: ['orders:read', 'admin'], tokenIssuer: idp.issuer })
})

t.test('the kit refuses forged, expired, wrong-audience assertions and access tokens in their place', async (t) => {
  const { gw, recorder, serviceUrl } = await setup(t)
  const token = signWith(key, goodClaims())
  // a genuine assertion, but made for billing
  await getWith(gw.url, '/billing/1', token)
  const forBilling = String(recorder.requests.at(-1)!.headers[HEADER])
  // an expired one: a gateway with the same key whose clock is two hours behind
  const pastMs = Date.now() - 2 * 3600_000
  const past = await startGateway(t, {
    ...baseConfig(key, [{ name: 'orders', prefix: '/orders', upstream: recorder.url, auth: 'required', assertion: { audience: ORDERS } }],
      { identity: { assertion: { header: HEADER, lifetime: '5m' } } }),
  }, { clock: () => pastMs })
  await getWith(past.url, '/orders/1', signWith(key, goodClaims({}, Math.floor(pastMs / 1000))))
  const expired = String(recorder.requests.at(-1)!.headers[HEADER])
  // forged: the gateway's kid and typ, another key
  const forged = signWith(makeKey('EdDSA', key.kid), { iss: ISSUER, aud: ORDERS, sub: 'admin', scope: 'admin', iat: Math.floor(Date.now() / 1000), exp: Math.floor(Date.now() / 1000) + 300, jti: 'x' }, { typ: 'portcullis-assertion+jwt' })

  const rows: Array<[name: string, headers: Record<string, string>, code: string]> = [
    ['no assertion (a request that bypassed the gateway)', {}, 'missing_token'],
    ['an access token in the assertion header', { [HEADER]: token }, 'token_invalid_type'],
    ['an access token as Authorization', { authorization: `Bearer ${token}` }, 'missing_token'],
    ['forged with the gateway kid', { [HEADER]: forged }, 'token_invalid_signature'],
    ['expired', { [HEADER]: expired }, 'token_expired'],
    ['made for another audience', { [HEADER]: forBilling }, 'token_invalid_audience'],
  ]
  for (const [name, headers, code] of rows) {
    const res = await getWith(serviceUrl, '/orders/1', undefined, Object.entries(headers))
    t.equal(res.status, 401, `${name}: 401`)
    t.equal(res.json().code, code, `${name}: ${code}`)
  }
  // through the gateway, a client's copy of the header is replaced by the real one
  const through = await getWith(gw.url, '/orders/1', token, [[HEADER, forged]])
  t.equal(through.status, 200)
  t.equal(through.json().sub, 'alice', 'the forged client copy never reached the service')
})

t.test('the gateway rotates its signing key by reload: the kit fetches the new kid, no restart', async (t) => {
  const { gw, config, service } = await setup(t)
  const token = signWith(key, goodClaims())
  t.equal((await getWith(gw.url, '/orders/1', token)).status, 200)
  const next = makeKey('EdDSA', 'k2')
  // first signs, all verify: tokens signed with k1 keep working, assertions are signed with k2
  const rotated = { ...config, tokens: { ...config.tokens, keys: [{ kid: next.kid, privateKey: next.privatePem }, ...config.tokens.keys] } }
  await gw.gateway.apply(loadConfigText(stringify(rotated), { env: {} }))
  await new Promise(resolve => setTimeout(resolve, 250)) // the kit's cooldown (200 ms) since its start fetch
  const res = await getWith(gw.url, '/orders/1', token)
  t.equal(res.status, 200, `the first assertion with the new kid is verified (${res.body})`)
  t.same([...(service.portcullisUpstream.keys?.kids ?? [])].sort(), ['k1', 'k2'])
})
