import { generateKeyPairSync, randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import t, { type Test } from 'tap'
import Fastify, { type FastifyInstance } from 'fastify'
import { makeKey, signWith } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'
import portcullis, { requireScopes, type PortcullisUpstreamOptions } from '../../src/upstream/index.js'
import { buildKeySet } from '../../src/tokens/keys.js'
import { startTripwire } from './helpers.js'

// The upstream kit on its own: a Fastify app with the plugin, fed assertions signed by hand
// with a gateway-like key, from a static JWKS or a JWKS server the test controls.

const GATEWAY = 'https://auth.example.test'
const ORDERS = 'https://orders.internal'
const HEADER = 'x-portcullis-assertion'
const TYP = 'portcullis-assertion+jwt'

const key = makeKey('EdDSA', 'gw-1')
const jwksOf = (...keys: TestKey[]): { keys: unknown[] } => ({
  keys: keys.flatMap(k => buildKeySet(k.alg, [{ kid: k.kid, privateKeyPem: k.privatePem }] as never).jwks.keys),
})

function claims (overrides: Record<string, unknown> = {}, nowSec = Math.floor(Date.now() / 1000)): Record<string, unknown> {
  return { iss: GATEWAY, aud: ORDERS, sub: 'alice', scope: 'orders:read orders:write', token_iss: 'https://idp.example.test', tenant: 't-1', iat: nowSec, exp: nowSec + 300, jti: randomUUID(), ...overrides }
}

function assertion (overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}, k: TestKey = key): string {
  return signWith(k, claims(overrides), { typ: TYP, ...header })
}

async function app (t: Test, options: Partial<PortcullisUpstreamOptions> = {}, routes?: (a: FastifyInstance) => void): Promise<FastifyInstance> {
  const a = Fastify()
  await a.register(portcullis, { issuer: GATEWAY, audience: ORDERS, algorithms: ['EdDSA'], jwks: jwksOf(key), ...options } as PortcullisUpstreamOptions)
  if (routes !== undefined) routes(a)
  else a.get('/orders', async (request) => ({ user: request.user }))
  t.teardown(() => a.close())
  return a
}

t.test('a valid assertion: 200 and request.user', async (t) => {
  const a = await app(t)
  const res = await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })
  t.equal(res.statusCode, 200, res.body)
  const { user } = res.json()
  t.match(user, { sub: 'alice', scope: 'orders:read orders:write', scopes: ['orders:read', 'orders:write'], token_iss: 'https://idp.example.test', tenant: 't-1', iss: GATEWAY, aud: ORDERS })
  // the same assertion again (the gateway reuses one for minutes): served from fast-jwt's cache
  for (let i = 0; i < 3; i++) t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).statusCode, 200)
})

t.test('refusals, each with its stable code', async (t) => {
  const tripwire = await startTripwire()
  t.teardown(() => tripwire.close())
  const a = await app(t)
  const nowSec = Math.floor(Date.now() / 1000)
  const other = makeKey('EdDSA', key.kid) // same kid, another key
  const es = makeKey('ES256', key.kid)
  const hs = (secret: string): TestKey => ({ alg: 'HS256', kid: key.kid, privatePem: secret, publicPem: secret })
  const accessToken = signWith(key, { iss: GATEWAY, aud: 'api.example.test', sub: 'alice', iat: nowSec, exp: nowSec + 300, jti: randomUUID(), scope: 'orders:read' })
  const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  const rows: Array<[name: string, headers: Record<string, string>, code: string]> = [
    ['no assertion', {}, 'missing_token'],
    ['an empty header', { [HEADER]: '' }, 'missing_token'],
    ['a valid assertion in Authorization instead', { authorization: `Bearer ${assertion()}` }, 'missing_token'],
    ['an access token in the assertion header (typ at+jwt)', { [HEADER]: accessToken }, 'token_invalid_type'],
    ['no typ', { [HEADER]: assertion({}, { typ: undefined }) }, 'token_invalid_type'],
    ['typ JWT', { [HEADER]: assertion({}, { typ: 'JWT' }) }, 'token_invalid_type'],
    ['for another service (aud)', { [HEADER]: assertion({ aud: 'https://billing.internal' }) }, 'token_invalid_audience'],
    ['no aud', { [HEADER]: assertion({ aud: undefined }) }, 'token_missing_claim'],
    ['from another gateway (iss)', { [HEADER]: assertion({ iss: 'https://evil.example.test' }) }, 'token_invalid_issuer'],
    ['expired', { [HEADER]: assertion({ iat: nowSec - 400, exp: nowSec - 60 }) }, 'token_expired'],
    ['issued in the future', { [HEADER]: assertion({ iat: nowSec + 120, exp: nowSec + 400 }) }, 'token_issued_in_future'],
    ['living longer than the gateway makes them', { [HEADER]: assertion({ exp: nowSec + 7200 }) }, 'token_lifetime_too_long'],
    ['no jti', { [HEADER]: assertion({ jti: undefined }) }, 'token_missing_claim'],
    ['no sub', { [HEADER]: assertion({ sub: undefined }) }, 'token_missing_claim'],
    ['forged: the kid of the gateway, another key', { [HEADER]: assertion({}, {}, other) }, 'token_invalid_signature'],
    ['forged, with jku at a listener', { [HEADER]: assertion({}, { jku: `${tripwire.url}/jwks` }, other) }, 'token_invalid_signature'],
    ['forged, with the key embedded (jwk)', { [HEADER]: assertion({}, { jwk: other.publicKey!.export({ format: 'jwk' }) }, other) }, 'token_invalid_signature'],
    ['a kid the gateway does not publish', { [HEADER]: assertion({}, {}, makeKey('EdDSA', 'gw-unknown')) }, 'token_unknown_key'],
    ['ES256 (not pinned)', { [HEADER]: assertion({}, {}, es) }, 'token_invalid_algorithm'],
    ["HS256 keyed with the gateway's public key", { [HEADER]: assertion({}, {}, hs(key.publicPem)) }, 'token_invalid_algorithm'],
    ['alg none', { [HEADER]: `${b64({ alg: 'none', typ: TYP, kid: key.kid })}.${b64(claims())}.` }, 'token_invalid_algorithm'],
    ['malformed', { [HEADER]: 'not.a.jwt' }, 'token_malformed'],
    ['two segments', { [HEADER]: 'abc.def' }, 'token_malformed'],
  ]
  for (const [name, headers, code] of rows) {
    const res = await a.inject({ url: '/orders', headers })
    t.equal(res.statusCode, 401, `${name}: 401`)
    t.equal(res.json().code, code, `${name}: ${code}`)
  }
  const tolerated = await a.inject({ url: '/orders', headers: { [HEADER]: assertion({ iat: nowSec - 305, exp: nowSec - 5 }) } })
  t.equal(tolerated.statusCode, 200, 'expired by less than the clock tolerance (10 s): accepted')
  t.equal(tripwire.connections(), 0, 'jku is never followed')
})

t.test('options: refused at registration when unusable', async (t) => {
  const bad: Array<[string, Partial<PortcullisUpstreamOptions>]> = [
    ['HS256', { algorithms: ['HS256'] }],
    ['no algorithm', { algorithms: [] }],
    ['both jwks and jwksUrl', { jwksUrl: 'https://gw.example.test/.well-known/jwks.json' }],
    ['neither', { jwks: undefined }],
    ['http to a non-loopback host', { jwks: undefined, jwksUrl: 'http://gateway.internal/.well-known/jwks.json', allowInsecureHttp: true }],
    ['http without allowInsecureHttp', { jwks: undefined, jwksUrl: 'http://127.0.0.1:1/.well-known/jwks.json' }],
    ['no audience', { audience: [] }],
    ['no issuer', { issuer: '' }],
  ]
  for (const [name, options] of bad) {
    const a = Fastify()
    a.register(portcullis, { issuer: GATEWAY, audience: ORDERS, algorithms: ['EdDSA'], jwks: jwksOf(key), ...options } as PortcullisUpstreamOptions)
    await t.rejects(async () => { await a.ready() }, { code: 'config_invalid' }, name)
    await a.close()
  }
})

t.test('global: false verifies only where the route asks; requireScopes for finer checks', async (t) => {
  const a = await app(t, { global: false }, (a) => {
    a.get('/health', async () => ({ ok: true }))
    a.get('/orders', { onRequest: a.verifyAssertion }, async (request) => ({ sub: request.user.sub }))
    a.post('/orders', { onRequest: [a.verifyAssertion, requireScopes('orders:write')] }, async () => ({ created: true }))
    a.delete('/orders', { onRequest: [a.verifyAssertion, requireScopes('orders:admin')] }, async () => ({ deleted: true }))
  })
  t.equal((await a.inject({ url: '/health' })).statusCode, 200, 'no hook: no verification')
  t.equal((await a.inject({ url: '/orders' })).statusCode, 401)
  t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).json().sub, 'alice')
  t.equal((await a.inject({ method: 'POST', url: '/orders', headers: { [HEADER]: assertion() } })).statusCode, 200)
  const denied = await a.inject({ method: 'DELETE', url: '/orders', headers: { [HEADER]: assertion() } })
  t.equal(denied.statusCode, 403)
  t.equal(denied.json().code, 'insufficient_scope')
})

t.test('keys from the gateway JWKS URL: fetched at start, a new kid fetched on demand, down at start', async (t) => {
  let served = jwksOf(key)
  let hits = 0
  let up = true
  const server = createServer((req, res) => {
    hits++
    if (!up) { res.writeHead(503).end(); return }
    res.writeHead(200, { 'content-type': 'application/jwk-set+json' }).end(JSON.stringify(served))
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  const jwksUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`
  const remote = { jwks: undefined, jwksUrl, allowInsecureHttp: true, cooldownMs: 1, minRefreshIntervalMs: 1 }

  const a = await app(t, remote)
  t.equal(hits, 1, 'fetched once at registration')
  t.equal(a.portcullisUpstream.keys?.state, 'ready')
  t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).statusCode, 200)

  // the gateway's operator rotates: a new signing key, the old one still published
  const next = makeKey('EdDSA', 'gw-2')
  served = jwksOf(next, key)
  const res = await a.inject({ url: '/orders', headers: { [HEADER]: assertion({}, {}, next) } })
  t.equal(res.statusCode, 200, `the new kid is fetched on its first use (${res.body})`)
  t.equal(hits, 2)
  t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).statusCode, 200, 'the old kid still verifies')

  // down at start: the app starts anyway, requests are refused until keys arrive
  up = false
  const startedAt = Date.now()
  const b = await app(t, { ...remote, startupWaitMs: 2_000 })
  t.ok(Date.now() - startedAt < 2_000, 'registration did not wait past the failed fetch')
  const unavailable = await b.inject({ url: '/orders', headers: { [HEADER]: assertion() } })
  t.equal(unavailable.statusCode, 401)
  t.equal(unavailable.json().code, 'token_keys_unavailable')
  up = true
  await new Promise(resolve => setTimeout(resolve, 20))
  let ok = false
  for (let i = 0; i < 50 && !ok; i++) {
    ok = (await b.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).statusCode === 200
    if (!ok) await new Promise(resolve => setTimeout(resolve, 20))
  }
  t.ok(ok, 'accepted once the gateway answers, without a restart')
})

t.test('RSA gateways: RS256 pinned, PS256 refused', async (t) => {
  const pair = generateKeyPairSync('rsa', { modulusLength: 2048 })
  const rsa: TestKey = { alg: 'RS256', kid: 'rsa-1', privatePem: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), publicPem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString() }
  const a = await app(t, { algorithms: ['RS256'], jwks: jwksOf(rsa) })
  t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion({}, {}, rsa) } })).statusCode, 200)
  const ps = await a.inject({ url: '/orders', headers: { [HEADER]: assertion({}, {}, { ...rsa, alg: 'PS256' }) } })
  t.equal(ps.json().code, 'token_invalid_algorithm')
})

t.test('a custom header and several audiences (one service behind several routes)', async (t) => {
  const a = await app(t, { header: 'x-gw-assertion', audience: [ORDERS, 'https://billing.internal'] })
  for (const aud of [ORDERS, 'https://billing.internal']) {
    t.equal((await a.inject({ url: '/orders', headers: { 'x-gw-assertion': assertion({ aud }) } })).statusCode, 200, aud)
  }
  t.equal((await a.inject({ url: '/orders', headers: { 'x-gw-assertion': assertion({ aud: 'https://other.internal' }) } })).json().code, 'token_invalid_audience')
  t.equal((await a.inject({ url: '/orders', headers: { [HEADER]: assertion() } })).json().code, 'missing_token', 'the default header is not read')
})
