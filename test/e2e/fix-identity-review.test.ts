import { createPublicKey, randomUUID, sign as cryptoSign } from 'node:crypto'
import t, { type Test } from 'tap'
import Fastify from 'fastify'
import fastifyJwt from '@fastify/jwt'
import { baseConfig, goodClaims, ISSUER, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'
import { startUpstream, type RecordingUpstream } from '../fixtures/upstream.js'
import { IDP_RESOURCE, startIdp, type TestIdp } from '../fixtures/idp.js'
import { decodeJwt, idpClaims, idpIssuer, idpKey, waitFor } from '../upstream/helpers.js'
import { loadConfigText } from '../../src/config/load.js'
import { routeWarnings } from '../../src/check.js'
import portcullis, { requireScopes } from '../../src/upstream/index.js'
import { validateClaims } from '../../src/sessions/users.js'
import { InvalidUserInputError } from '../../src/sessions/errors.js'

// Found by an adversarial review of identity out (stop 30, /tmp/review-assert): two different
// signed claim values reached the upstream as one (lone surrogates, integers past 2^53); every
// identity-provider token without `sub` became the subject ""; the core claims of the
// assertion were not counted against identity.maxHeaderBytes; and the upstream kit's
// requireScopes read `request.user`, which an app's own @fastify/jwt overwrites.

const key = makeKey('EdDSA')
const HEADER = 'x-portcullis-assertion'
const UP = 'https://up.internal'
const identity = {
  headers: { sub: 'x-user-id', scope: 'x-user-scopes', email: 'x-user-email', account_id: 'x-user-account' },
  assertion: { header: HEADER, lifetime: '5m' },
}

/** a token over payload text written by hand (the issuer's exact digits), EdDSA */
function signRaw (k: TestKey, payloadJson: string): string {
  const h = Buffer.from(JSON.stringify({ alg: k.alg, typ: 'at+jwt', kid: k.kid })).toString('base64url')
  const p = Buffer.from(payloadJson).toString('base64url')
  return `${h}.${p}.${cryptoSign(null, Buffer.from(`${h}.${p}`), k.privatePem).toString('base64url')}`
}

/** a claims object as JSON, with `extra` spliced in as raw text (`"account_id":1234567890123456789`) */
function jsonWith (claims: Record<string, unknown>, extra: string): string {
  return JSON.stringify(claims).replace(/}$/, `,${extra}}`)
}

const get = (url: string, token: string): Promise<RawResponse> => raw(url, '/api/x', { headers: { authorization: `Bearer ${token}` } })

/** each token is 401 token_invalid_claim and reaches no upstream */
async function refusedEach (t: Test, url: string, upstream: RecordingUpstream, cases: Array<[string, string]>): Promise<void> {
  for (const [name, token] of cases) {
    const before = upstream.requests.length
    const res = await get(url, token)
    t.equal(res.status, 401, `${name}: 401`)
    t.equal(res.json().code, 'token_invalid_claim', `${name}: token_invalid_claim`)
    t.equal(upstream.requests.length, before, `${name}: the upstream saw nothing`)
  }
}

/** the gateway's own tokens and an EdDSA identity provider's, one route to a recording upstream */
async function setup (t: Test, extra: { identity?: Record<string, unknown>, route?: Record<string, unknown>, issuer?: Record<string, unknown> } = {}) {
  const idp: TestIdp = await startIdp({ alg: 'EdDSA' })
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required', ...(extra.route ?? { assertion: { audience: UP } }) }],
      { identity: extra.identity ?? identity }),
    issuers: [idpIssuer(idp, extra.issuer)],
  })
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'), "the provider's keys are fetched")
  return { idp, idpSigner: idpKey(idp), upstream, gw }
}

t.test('fix-lone-surrogate-claim: a claim that is not well-formed UTF-16 is refused, whoever signed it; the one it would be mistaken for passes', async (t) => {
  const { idp, idpSigner, upstream, gw } = await setup(t)
  // JSON.stringify writes a lone surrogate as the escape \ud800: the token is valid UTF-8
  const refused: Array<[string, string]> = [
    ['own sub admin\\ud800', signWith(key, goodClaims({ sub: 'admin\ud800' }))],
    ['own sub admin\\udbff', signWith(key, goodClaims({ sub: 'admin\udbff' }))],
    ['own sub \\udc00admin', signWith(key, goodClaims({ sub: '\udc00admin' }))],
    ['own mapped email', signWith(key, goodClaims({ email: 'boss@corp.test\udc00' }))],
    ['own unmapped claim (reaches the assertion)', signWith(key, goodClaims({ groups: ['ops', 'adm\ud800in'] }))],
    ['own claim name (reaches the assertion)', signWith(key, goodClaims({ 'role\ud800': 'x' }))],
    ['provider sub', signWith(idpSigner, idpClaims(idp, { sub: 'admin\ud800' }))],
    ['provider mapped email', signWith(idpSigner, idpClaims(idp, { sub: 'u-1', email: 'boss@corp.test\udc00' }))],
  ]
  await refusedEach(t, gw.url, upstream, refused)
  const fine = await get(gw.url, signWith(key, goodClaims({ sub: 'admin\ufffd', email: 'b\u{1F600}ss@corp.test' })))
  t.equal(fine.status, 200, 'U+FFFD itself and a surrogate pair (an emoji) pass')
  const seen = upstream.requests.at(-1)!
  t.equal(Buffer.from(seen.headers['x-user-id'] as string, 'latin1').toString('utf8'), 'admin\ufffd', 'as their UTF-8 bytes')
  t.equal(Buffer.from(seen.headers['x-user-email'] as string, 'latin1').toString('utf8'), 'b\u{1F600}ss@corp.test')
  t.equal(decodeJwt(seen.headers[HEADER] as string).payload.sub, 'admin\ufffd', 'and in the assertion')
})

t.test('fix-unsafe-integer-claim: an integer past 2^53 is refused (it was already rounded); a safe one arrives exact', async (t) => {
  const { idp, idpSigner, upstream, gw } = await setup(t)
  const now = Math.floor(Date.now() / 1000)
  const own = (sub: string, extra: string): string => signRaw(key, jsonWith(goodClaims({ sub }, now), extra))
  const refused: Array<[string, string]> = [
    ['mapped 1234567890123456789', own('mallory', '"account_id":1234567890123456789')],
    ['mapped 1234567890123456700', own('victim', '"account_id":1234567890123456700')],
    ['mapped -9007199254740993', own('mallory', '"account_id":-9007199254740993')],
    ['mapped 1e400 (Infinity)', own('mallory', '"account_id":1e400')],
    ['unmapped, nested (reaches the assertion)', own('mallory', '"org":{"ids":[1,9007199254740993]}')],
    ['provider, mapped', signRaw(idpSigner, jsonWith(idpClaims(idp, { sub: 'u-1' }, now), '"account_id":1234567890123456789'))],
  ]
  await refusedEach(t, gw.url, upstream, refused)
  const fine = await get(gw.url, own('alice', '"account_id":9007199254740991,"ratio":0.5'))
  t.equal(fine.status, 200, 'the largest safe integer, and a fraction, pass')
  const seen = upstream.requests.at(-1)!
  t.equal(seen.headers['x-user-account'], '9007199254740991', 'exact in the header')
  t.equal(decodeJwt(seen.headers[HEADER] as string).payload.account_id, 9007199254740991, 'and in the assertion')
})

t.test('fix-lone-surrogate-claim: without an assertion or claims header, only claims that reach the upstream are judged', async (t) => {
  const { upstream, gw } = await setup(t, { identity: { headers: { sub: 'x-user-id', email: 'x-user-email' } }, route: {} })
  const unmapped = await get(gw.url, signWith(key, goodClaims({ note: 'x\ud800', big: 1e300 })))
  t.equal(unmapped.status, 200, 'an unmapped claim reaches no upstream: not judged')
  t.equal(upstream.requests.length, 1)
  const mapped = await get(gw.url, signWith(key, goodClaims({ email: 'x\ud800' })))
  t.equal(mapped.status, 401, 'a mapped one is')
  t.equal(mapped.json().code, 'token_invalid_claim')
  t.equal(upstream.requests.length, 1, 'the upstream saw nothing')
})

t.test('fix-subless-token-one-identity: a provider token without sub has no subject upstream; the kit refuses its assertion', async (t) => {
  const { idp, idpSigner, upstream, gw } = await setup(t, { issuer: { requiredClaims: ['iat'] } })
  const subless = (client: string): string => {
    const { sub: _sub, ...claims } = idpClaims(idp, { client_id: client, azp: client })
    return signWith(idpSigner, claims)
  }
  const assertions: string[] = []
  for (const client of ['billing-service', 'partner-integration']) {
    const res = await get(gw.url, subless(client))
    t.equal(res.status, 200, `${client}: accepted (requiredClaims leaves sub out)`)
    const seen = upstream.requests.at(-1)!
    t.equal(seen.headers['x-user-id'], undefined, `${client}: no x-user-id`)
    const payload = decodeJwt(seen.headers[HEADER] as string).payload
    t.notOk('sub' in payload, `${client}: no sub in the assertion (was sub: "")`)
    assertions.push(seen.headers[HEADER] as string)
  }

  // the upstream kit, with the gateway's JWKS
  const jwks = await (await fetch(`${gw.url}/.well-known/jwks.json`)).json() as { keys: unknown[] }
  const app = Fastify()
  await app.register(portcullis, { jwks, issuer: ISSUER, audience: UP, algorithms: ['EdDSA'] })
  app.get('/', async (request) => ({ sub: request.portcullisUser?.sub }))
  t.teardown(() => app.close())
  for (const a of assertions) {
    const res = await app.inject({ url: '/', headers: { [HEADER]: a } })
    t.equal(res.statusCode, 401, 'the kit refuses an assertion without sub')
    t.equal(res.json().code, 'token_missing_claim')
  }
  const now = Math.floor(Date.now() / 1000)
  const emptySub = signWith(key, { iss: ISSUER, aud: UP, sub: '', scope: '', token_iss: idp.issuer, iat: now, exp: now + 300, jti: randomUUID() }, { typ: 'portcullis-assertion+jwt' })
  const empty = await app.inject({ url: '/', headers: { [HEADER]: emptySub } })
  t.equal(empty.statusCode, 401, 'and one whose sub is empty')
  t.equal(empty.json().code, 'token_invalid_claim')
  const alice = signWith(key, { iss: ISSUER, aud: UP, sub: 'alice', scope: '', token_iss: ISSUER, iat: now, exp: now + 300, jti: randomUUID() }, { typ: 'portcullis-assertion+jwt' })
  t.same((await app.inject({ url: '/', headers: { [HEADER]: alice } })).json(), { sub: 'alice' }, 'a subject passes')
})

t.test('fix-subless-token-one-identity: portcullis check warns about an issuer whose requiredClaims leave out sub', async (t) => {
  const idp = { issuer: 'https://idp.example.test/realms/main', jwksUri: 'https://idp.example.test/keys', audiences: [IDP_RESOURCE], algorithms: ['ES256'] }
  const config = (requiredClaims?: string[]) => loadConfigText(JSON.stringify(baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:1', auth: 'required' }], {
    issuers: [{ name: 'corp', ...idp, ...(requiredClaims === undefined ? {} : { requiredClaims }) }],
  })), { env: {} })
  const warned = routeWarnings(config(['iat'])).filter(w => w.includes('issuer "corp"'))
  t.equal(warned.length, 1, 'one warning')
  t.match(warned[0], /requiredClaims leaves out sub/)
  t.same(routeWarnings(config()).filter(w => w.includes('issuer "corp"')), [], 'none with the default [sub, iat]')
})

t.test('fix-identity-over-budget: identity headers and the assertion never exceed identity.maxHeaderBytes; a core that cannot fit is refused', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required', assertion: { audience: UP } },
    { name: 'plain', prefix: '/plain', upstream: upstream.url, auth: 'required' },
  ], { identity: { assertion: { header: HEADER, lifetime: '5m' } } })) // defaults: maxHeaderBytes 8192, sub and scope mapped
  const budget = 8192
  const names = ['x-user-id', 'x-user-scopes', HEADER, 'x-portcullis-identity-truncated']
  const scopes = (n: number): string => Array.from({ length: n }, (_, i) => `app:permission-${String(i).padStart(4, '0')}`).join(' ')
  const rows: Array<[string, Record<string, unknown>]> = [
    ['short sub, one scope', goodClaims()],
    ['sub of 5000 characters', goodClaims({ sub: 'u'.repeat(5000) })],
    ['200 scopes', goodClaims({ scope: scopes(200) })],
    ['240 scopes', goodClaims({ scope: scopes(240) })],
    ...[1000, 1500, 2000, 2500, 3000, 3500, 4000].map(n => [`sub of ${n}`, goodClaims({ sub: 'v'.repeat(n), groups: ['g'.repeat(500)] })] as [string, Record<string, unknown>]),
  ]
  let refused = 0
  for (const [name, claims] of rows) {
    const before = upstream.requests.length
    const token = signWith(key, claims)
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    if (res.status === 200) {
      const h = upstream.requests.at(-1)!.headers
      const total = names.reduce((n, k) => n + (h[k] === undefined ? 0 : k.length + String(h[k]).length), 0)
      t.ok(total <= budget, `${name}: ${total} bytes of identity within ${budget}`)
      continue
    }
    refused++
    t.equal(res.status, 401, `${name}: over the budget whatever is left out: 401`)
    t.equal(res.json().code, 'token_invalid_claim', `${name}: token_invalid_claim`)
    t.equal(upstream.requests.length, before, `${name}: the upstream saw nothing`)
    const again = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    t.equal(again.json().code, 'token_invalid_claim', `${name}: again (the refusal is kept, nothing signed again)`)
  }
  t.ok(refused >= 3, `the 5000-character sub and the scope lists are refused (${refused} rows)`)
  const signatures = gw.gateway.runtime.assertions!.signatures
  const big = signWith(key, goodClaims({ sub: 'w'.repeat(5000) }))
  await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${big}` } })
  const afterFirst = gw.gateway.runtime.assertions!.signatures
  await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${big}` } })
  t.equal(gw.gateway.runtime.assertions!.signatures, afterFirst, 'a refused token costs no signature on its next request')
  t.ok(afterFirst > signatures)
  const plain = await raw(gw.url, '/plain/x', { headers: { authorization: `Bearer ${big}` } })
  t.equal(plain.status, 200, 'a route without an assertion still takes it: its headers fit')
  t.equal(upstream.requests.at(-1)!.headers['x-user-id'], 'w'.repeat(5000))
})

t.test("fix-kit-user-shared: requireScopes reads the kit's own verdict, which an app's @fastify/jwt cannot replace", async (t) => {
  const app = Fastify()
  // the app's own @fastify/jwt: e.g. signed share links it hands out
  await app.register(fastifyJwt, { secret: 'app-own-secret-for-share-links-0123456789' })
  const jwk = createPublicKey(key.publicPem).export({ format: 'jwk' })
  await app.register(portcullis, { jwks: { keys: [{ ...jwk, kid: key.kid, alg: key.alg, use: 'sig' }] }, issuer: ISSUER, audience: UP, algorithms: ['EdDSA'] })
  let assigned: unknown
  app.get('/admin', {
    preHandler: [async (request) => { if (request.headers.authorization !== undefined) await request.jwtVerify() }, requireScopes('admin')],
  }, async (request) => ({ sub: request.portcullisUser?.sub }))
  app.get('/who', {
    preHandler: async (request) => { if (request.headers.authorization !== undefined) await request.jwtVerify() },
  }, async (request) => {
    try {
      (request as unknown as { portcullisUser: unknown }).portcullisUser = { sub: 'forged', scopes: ['admin'] }
    } catch (err) {
      assigned = err
    }
    return { kit: request.portcullisUser?.sub, user: (request.user as { sub?: string }).sub }
  })
  t.teardown(() => app.close())
  const now = Math.floor(Date.now() / 1000)
  const assertion = signWith(key, { iss: ISSUER, aud: UP, sub: 'mallory', scope: 'orders:read', token_iss: ISSUER, iat: now, exp: now + 300, jti: randomUUID() }, { typ: 'portcullis-assertion+jwt' })
  const appToken = app.jwt.sign({ sub: 'share-link-for-alice', scopes: ['admin'] })
  const alone = await app.inject({ url: '/admin', headers: { [HEADER]: assertion } })
  t.equal(alone.statusCode, 403, 'the assertion alone lacks admin')
  const both = await app.inject({ url: '/admin', headers: { [HEADER]: assertion, authorization: `Bearer ${appToken}` } })
  t.equal(both.statusCode, 403, 'an app token verified after the kit grants nothing through requireScopes (was 200)')
  t.equal(both.json().code, 'insufficient_scope')
  const who = await app.inject({ url: '/who', headers: { [HEADER]: assertion, authorization: `Bearer ${appToken}` } })
  t.same(who.json(), { kit: 'mallory', user: 'share-link-for-alice' }, "request.portcullisUser stays the kit's; request.user is whoever verified last")
  t.type(assigned, TypeError, 'request.portcullisUser cannot be assigned')
})

t.test("fix-lone-surrogate-claim, fix-unsafe-integer-claim: a user's claim the gateway would refuse in every token is refused when it is set", async (t) => {
  const refused: Array<[string, Record<string, unknown>]> = [
    ['a lone surrogate', { tier: 'gold\ud800' }],
    ['a lone surrogate inside a list', { groups: ['ok', '\udc00'] }],
    ['a lone surrogate in a member name', { nested: { 'k\ud800': 1 } }],
    ['a lone surrogate in a claim name', { 't\udbff': 'x' }],
    ['an integer past 2^53', { account_id: JSON.parse('1234567890123456789') }],
    ['a negative one inside an object', { nested: { n: -(2 ** 60) } }],
  ]
  for (const [what, claims] of refused) t.throws(() => validateClaims(claims), InvalidUserInputError, `${what}: refused`)
  t.same(validateClaims({ tier: 'gold 🥇', account_id: Number.MAX_SAFE_INTEGER, ratio: 0.5, big: '1234567890123456789' }),
    { tier: 'gold 🥇', account_id: Number.MAX_SAFE_INTEGER, ratio: 0.5, big: '1234567890123456789' }, 'a surrogate pair, the largest safe integer, a fraction and a big id as a string are kept')
})
