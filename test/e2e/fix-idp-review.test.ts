import t from 'tap'
import { createPublicKey } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { AUDIENCE, baseConfig, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'

// Findings of an adversarial review with a hostile identity provider (after issue 10), each
// reproduced against a real gateway, a real JWKS server and a recording upstream:
// - an array scope claim element with spaces (`scp: ["orders:read", "display name
//   orders:admin"]`, a role or group name a user may influence) was one opaque scope to the
//   gateway — POST needing orders:admin refused — but went upstream space-joined, in the
//   assertion's `scope` and x-user-scopes, where it became orders:admin: the upstream kit
//   granted it. Elements that are not scope tokens now grant nothing;
// - x-user-scopes carried the raw `scope` claim, not the scopes the gateway authorized on
//   (`scopeClaim: scp`, a token with `scope: "orders:admin superuser"` beside scp);
// - a token inside its clock-skew window got an assertion already expired (exp = the token's
//   exp), refused upstream and signed again on every request.

const partner = 'https://partner.test'
const ASSERTION = 'x-portcullis-assertion'

function payloadOf (jwt: unknown): Record<string, any> {
  return JSON.parse(Buffer.from(String(jwt).split('.')[1] ?? '', 'base64url').toString())
}

t.test('identity provider tokens: scopes and assertion', async (t) => {
  const key = makeKey('EdDSA')
  const idpKey = makeKey('RS256')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const jwk = { ...createPublicKey(idpKey.publicPem).export({ format: 'jwk' }), kid: idpKey.kid, alg: 'RS256', use: 'sig' }
  const jwks = createServer((_req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ keys: [jwk] })) })
  await new Promise<void>(resolve => jwks.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { jwks.closeAllConnections(); jwks.close() })
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', issuers: ['partner'], scopes: { GET: ['orders:read'], '*': ['orders:admin'] }, assertion: { audience: 'https://orders.internal' } }], {
      identity: { assertion: { header: ASSERTION, lifetime: '5m' } },
    }),
    issuers: [{ name: 'partner', issuer: partner, jwksUri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks`, audiences: [AUDIENCE], algorithms: ['RS256'], scopeClaim: 'scp', clockSkew: '30s' }],
  })
  // the partner's keys are fetched at start
  await until('the partner issuer ready', async () => (await raw(gw.adminUrl, '/readyz')).status === 200 && !(await raw(gw.adminUrl, '/readyz')).body.includes('"state":"degraded"'))
  const now = Math.floor(Date.now() / 1000)
  const token = (claims: Record<string, unknown>): string => signWith(idpKey, { iss: partner, aud: AUDIENCE, sub: 'mallory', iat: now - 100, exp: now + 600, ...claims })
  const send = async (method: string, path: string, jwt: string): Promise<{ status: number, headers: Record<string, unknown> | undefined }> => {
    const before = upstream.requests.length
    const res = await raw(gw.url, path, { method, headers: { authorization: `Bearer ${jwt}` } })
    return { status: res.status, headers: upstream.requests[before]?.headers as Record<string, unknown> | undefined }
  }

  t.test('an array element that is not a scope token grants nothing, here or upstream', async (t) => {
    const injected = token({ scp: ['orders:read', 'display name orders:admin'] })
    const post = await send('POST', '/orders/1', injected)
    t.equal(post.status, 403, `orders:admin is not granted (${post.status})`)
    const get = await send('GET', '/orders/1', injected)
    t.equal(get.status, 200)
    t.equal(get.headers?.['x-user-scopes'], 'orders:read', 'x-user-scopes: only the scope tokens')
    t.equal(payloadOf(get.headers?.[ASSERTION]).scope, 'orders:read', 'the assertion\'s scope: the same')
  })

  t.test('x-user-scopes: the scopes authorized on, not the raw scope claim', async (t) => {
    const get = await send('GET', '/orders/2', token({ scp: ['orders:read'], scope: 'orders:admin superuser' }))
    t.equal(get.status, 200)
    t.equal(get.headers?.['x-user-scopes'], 'orders:read')
    t.equal(payloadOf(get.headers?.[ASSERTION]).scope, 'orders:read')
  })

  t.test('a token in its clock-skew window gets an assertion that lives as long as the gateway accepts it', async (t) => {
    const late = token({ scp: ['orders:read'], iat: now - 100, exp: now - 15 })
    const first = await send('GET', '/orders/3', late)
    t.equal(first.status, 200, 'accepted within the 30 s skew')
    const a = payloadOf(first.headers?.[ASSERTION])
    t.ok(a.exp > a.iat, `exp ${String(a.exp)} after iat ${String(a.iat)}`)
    t.ok(a.exp >= Math.floor(Date.now() / 1000), 'not born expired')
    t.ok(a.exp <= now - 15 + 30 + 1, 'and no longer than the gateway accepts the token')
    const second = await send('GET', '/orders/3', late)
    t.equal(second.headers?.[ASSERTION], first.headers?.[ASSERTION], 'reused, not signed again per request')
  })
})
