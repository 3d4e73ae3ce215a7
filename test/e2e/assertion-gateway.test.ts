import { createPublicKey, type JsonWebKey } from 'node:crypto'
import t, { type Test } from 'tap'
import { createVerifier } from 'fast-jwt'
import { startUpstream, type RecordingUpstream } from '../fixtures/upstream.js'
import { AUDIENCE, baseConfig, goodClaims, ISSUER, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { IDP_CLIENT_ID, startIdp } from '../fixtures/idp.js'
import { decodeJwt, getWith, idpIssuer, waitFor } from '../upstream/helpers.js'

// Identity out, verifiable: on a route with `assertion: { audience }` the upstream gets a
// short-lived JWT the gateway signed (typ portcullis-assertion+jwt, aud = that route's
// audience, the verified claims), verifiable with the gateway's JWKS; signed once per token
// and audience, renewed before it expires, never accepted back as an access token.

const key = makeKey('EdDSA')
const HEADER = 'x-portcullis-assertion'
const ORDERS = 'https://orders.internal'
const BILLING = 'https://billing.internal'
const LIFETIME_SEC = 60

function routes (upstream: RecordingUpstream): unknown[] {
  return [
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', assertion: { audience: ORDERS } },
    { name: 'billing', prefix: '/billing', upstream: upstream.url, auth: 'required', assertion: { audience: BILLING } },
    { name: 'plain', prefix: '/plain', upstream: upstream.url, auth: 'required' },
    { name: 'maybe', prefix: '/maybe', upstream: upstream.url, auth: 'optional', assertion: { audience: ORDERS } },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
  ]
}

/** a gateway on an injected clock (`time.now`), with the assertion on; its upstream records */
async function setup (t: Test, extra: Record<string, any> = {}) {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const time = { now: Date.now() }
  const config = {
    ...baseConfig(key, routes(upstream), { identity: { assertion: { header: HEADER, lifetime: `${LIFETIME_SEC}s` }, ...extra.identity }, tokens: extra.tokens }),
    issuers: extra.issuers ?? [],
  }
  const gw = await startGateway(t, config, { clock: () => time.now })
  const signer = gw.gateway.runtime.assertions
  if (signer === undefined) throw new Error('identity.assertion is configured: the runtime must have a signer')
  return { upstream, gw, time, signer }
}

function lastAssertion (upstream: RecordingUpstream): string | undefined {
  const v = upstream.requests.at(-1)?.headers[HEADER]
  return typeof v === 'string' ? v : undefined
}

/** a verifier for assertions built from the JWKS the gateway publishes */
async function jwksVerifier (gatewayUrl: string, audience: string, nowMs: number) {
  const jwks = await (await fetch(`${gatewayUrl}/.well-known/jwks.json`)).json() as { keys: Array<JsonWebKey & { kid: string, alg: string }> }
  return (token: string) => {
    const { kid } = decodeJwt(token).header
    const jwk = jwks.keys.find(k => k.kid === kid)
    if (jwk === undefined) throw new Error(`kid ${String(kid)} is not in the gateway's JWKS`)
    const pem = createPublicKey({ key: jwk, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
    return createVerifier({
      key: pem,
      algorithms: [jwk.alg as 'EdDSA'],
      allowedIss: ISSUER,
      allowedAud: audience,
      checkTyp: 'portcullis-assertion+jwt',
      requiredClaims: ['iss', 'aud', 'sub', 'exp', 'iat', 'jti'],
      clockTimestamp: nowMs,
    })(token) as Record<string, any>
  }
}

t.test('present on a route with assertion.audience, absent elsewhere; aud = the route audience; verifiable with the JWKS', async (t) => {
  const { upstream, gw, time } = await setup(t)
  const token = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read orders:write', tenant: 't-1', roles: ['a', 'b'] }, Math.floor(time.now / 1000)))

  t.equal((await getWith(gw.url, '/orders/1', token)).status, 200)
  const assertion = lastAssertion(upstream)
  t.type(assertion, 'string', 'the orders upstream gets an assertion')
  const { header, payload } = decodeJwt(assertion!)
  t.same(header, { alg: 'EdDSA', typ: 'portcullis-assertion+jwt', kid: key.kid }, 'typ says what it is; the key is the gateway signing key')
  t.match(payload, { iss: ISSUER, aud: ORDERS, sub: 'alice', scope: 'orders:read orders:write', token_iss: ISSUER, tenant: 't-1', roles: ['a', 'b'] })
  t.equal(payload.exp - payload.iat, LIFETIME_SEC, 'lives identity.assertion.lifetime')
  t.equal(payload.iat, Math.floor(time.now / 1000), 'iat from the gateway clock')
  t.not(payload.jti, decodeJwt(token).payload.jti, 'a jti of its own')

  const verify = await jwksVerifier(gw.url, ORDERS, time.now)
  t.equal(verify(assertion!).sub, 'alice', "verifies with the key from the gateway's JWKS")
  const forBilling = await jwksVerifier(gw.url, BILLING, time.now)
  t.throws(() => forBilling(assertion!), { code: 'FAST_JWT_INVALID_CLAIM_VALUE' }, 'not for another audience')

  t.equal((await getWith(gw.url, '/billing/1', token)).status, 200)
  t.equal(decodeJwt(lastAssertion(upstream)!).payload.aud, BILLING, 'the billing route gets one for billing')

  for (const path of ['/plain/1', '/open/1']) {
    t.equal((await getWith(gw.url, path, token)).status, 200)
    t.equal(lastAssertion(upstream), undefined, `${path}: no assertion on a route without one`)
  }
  t.equal((await getWith(gw.url, '/maybe/1', undefined)).status, 200)
  t.equal(lastAssertion(upstream), undefined, 'an optional route without a token: nothing to assert')
  t.equal((await getWith(gw.url, '/maybe/1', token)).status, 200)
  t.equal(decodeJwt(lastAssertion(upstream)!).payload.sub, 'alice', 'an optional route with a token: asserted')
})

t.test('a client-sent assertion (or any x-portcullis-* header) is always stripped', async (t) => {
  const { upstream, gw, time } = await setup(t)
  const token = signWith(key, goodClaims({}, Math.floor(time.now / 1000)))
  const forged = signWith(makeKey('EdDSA', key.kid), { iss: ISSUER, aud: ORDERS, sub: 'admin' }, { typ: 'portcullis-assertion+jwt' })
  const spoof: Array<[string, string]> = [
    [HEADER, forged], ['X-Portcullis-Assertion', forged], ['x_portcullis_assertion', forged],
    ['x-portcullis-identity-truncated', 'x-user-id'], ['X-PORTCULLIS-ANYTHING', '1'],
  ]
  for (const [path, withToken] of [['/orders/1', true], ['/plain/1', true], ['/open/1', false], ['/maybe/1', false]] as const) {
    const res = await getWith(gw.url, path, withToken ? token : undefined, spoof)
    t.equal(res.status, 200, path)
    const got = upstream.requests.at(-1)!
    const names = got.rawHeaders.filter((_, i) => i % 2 === 0).map(n => n.toLowerCase().replaceAll('_', '-'))
    const ours = names.filter(n => n.startsWith('x-portcullis-'))
    if (path === '/orders/1') {
      t.same(ours, [HEADER], `${path}: exactly one assertion, the gateway's`)
      t.not(got.headers[HEADER], forged)
      t.equal(decodeJwt(String(got.headers[HEADER])).payload.sub, 'alice')
    } else {
      t.same(ours, [], `${path}: every client-sent x-portcullis-* header is gone`)
    }
  }
})

t.test('signed once per token and audience, reused across requests', async (t) => {
  const { upstream, gw, time, signer } = await setup(t)
  const token = signWith(key, goodClaims({}, Math.floor(time.now / 1000)))
  for (let i = 0; i < 50; i++) t.equal((await getWith(gw.url, '/orders/1', token)).status, 200)
  t.equal(signer.signatures, 1, '50 requests with one token: one signature')
  const seen = new Set(upstream.requests.map(r => r.headers[HEADER]))
  t.equal(seen.size, 1, 'the upstream got the very same assertion 50 times')
  for (let i = 0; i < 10; i++) await getWith(gw.url, '/billing/1', token)
  t.equal(signer.signatures, 2, 'a second audience: a second signature')
  const other = signWith(key, goodClaims({ sub: 'bob' }, Math.floor(time.now / 1000)))
  await getWith(gw.url, '/orders/1', other)
  await getWith(gw.url, '/orders/1', other)
  t.equal(signer.signatures, 3, 'another token: its own')
})

t.test('signed once per token and audience also with the verify cache off', async (t) => {
  const { gw, time, signer } = await setup(t, { tokens: { verifyCacheSize: 0 } })
  const token = signWith(key, goodClaims({}, Math.floor(time.now / 1000)))
  for (let i = 0; i < 20; i++) t.equal((await getWith(gw.url, '/orders/1', token)).status, 200)
  t.equal(gw.gateway.runtime.verifier.cacheSize, 0, 'nothing cached: every request verified the token again')
  t.equal(signer.signatures, 1, 'still one signature')
})

t.test('renewed before it expires, never outliving the token', async (t) => {
  const { upstream, gw, time, signer } = await setup(t)
  const startSec = Math.floor(time.now / 1000)
  time.now = startSec * 1000 // whole seconds, so the arithmetic below is exact
  const token = signWith(key, goodClaims({}, startSec))
  await getWith(gw.url, '/orders/1', token)
  const first = lastAssertion(upstream)!
  // renewed once less than 20 % of its lifetime is left: at 48 s of 60
  time.now += 47_000
  await getWith(gw.url, '/orders/1', token)
  t.equal(lastAssertion(upstream), first, 'at 47 s of 60: the same assertion')
  t.equal(signer.signatures, 1)
  time.now += 2_000
  await getWith(gw.url, '/orders/1', token)
  const second = lastAssertion(upstream)!
  t.not(second, first, 'at 49 s of 60: a new one, before the old one expires')
  t.equal(signer.signatures, 2)
  t.equal(decodeJwt(second).payload.iat, startSec + 49)
  t.equal(decodeJwt(second).payload.exp, startSec + 49 + LIFETIME_SEC)

  // a token with 20 s left: the assertion ends when the gateway stops accepting it — its
  // exp plus tokens.clockSkew (30 s by default)
  const short = signWith(key, goodClaims({ iat: startSec, exp: startSec + 49 }, startSec))
  await getWith(gw.url, '/orders/1', short)
  t.equal(decodeJwt(lastAssertion(upstream)!).payload.exp, startSec + 49 + 30, 'exp = the token exp + skew when that comes first')
})

t.test('an assertion replayed as an access token is refused', async (t) => {
  const { upstream, gw, time } = await setup(t)
  const token = signWith(key, goodClaims({ aud: [AUDIENCE, ORDERS] }, Math.floor(time.now / 1000)))
  await getWith(gw.url, '/orders/1', token)
  const assertion = lastAssertion(upstream)!
  const before = upstream.requests.length
  for (const path of ['/orders/1', '/plain/1']) {
    const res = await getWith(gw.url, path, assertion)
    t.equal(res.status, 401, `${path}: refused`)
    t.equal(res.json().code, 'token_invalid_type', `${path}: typ portcullis-assertion+jwt is not at+jwt`)
  }
  // even under the token's audience and typ: its aud is the upstream's, not the gateway's
  t.equal(upstream.requests.length, before)
})

t.test('an IdP token is asserted too: token_iss names the IdP, scopes from wherever the IdP keeps them', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const { upstream, gw, time } = await setup(t, { issuers: [idpIssuer(idp)] })
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'))
  time.now = Date.now()
  const token = await idp.issueToken({ scope: 'orders:read admin' })
  t.equal((await getWith(gw.url, '/orders/1', token)).status, 200)
  const { payload } = decodeJwt(lastAssertion(upstream)!)
  t.match(payload, { iss: ISSUER, aud: ORDERS, sub: IDP_CLIENT_ID, token_iss: idp.issuer, scope: 'orders:read admin' })
  t.notOk('client_id' in payload, 'claims about the presented token stay out')
  t.ok((await jwksVerifier(gw.url, ORDERS, time.now))(lastAssertion(upstream)!))
})
