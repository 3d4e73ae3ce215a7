import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { decodeJwt, getWith } from '../upstream/helpers.js'

// Identity out, the headers: everything the gateway writes about a token stays within
// identity.maxHeaderBytes, so a token with 500 groups never produces a request the upstream
// refuses (Node's default header limit is 16 KiB); what did not fit is named, never cut in
// half; and nothing under x-portcullis-* a client sends gets through.

const key = makeKey('EdDSA')
const HEADER = 'x-portcullis-assertion'

/** 500 groups of 16 characters: ~9.5 KB as a header, ~13 KB of token — under the gateway's 16 KiB, over the budget */
function fiveHundredGroups (): string[] {
  return Array.from({ length: 500 }, (_, i) => `engineering-${String(i).padStart(4, '0')}`)
}

const identity = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  headers: [{ claim: 'sub', header: 'x-user-id' }, { claim: 'scope', header: 'x-user-scopes' }, { claim: 'groups', header: 'x-user-groups' }],
  claimsHeader: 'x-user-claims',
  assertion: { header: HEADER, lifetime: '5m' },
  ...extra,
})

function identityBytes (headers: Record<string, unknown>): number {
  let n = 0
  for (const [name, value] of Object.entries(headers)) {
    if (name.startsWith('x-user-') || name.startsWith('x-portcullis-')) n += name.length + String(value).length
  }
  return n
}

t.test('a token with 500 groups: identity within maxHeaderBytes, the dropped headers named, the upstream accepts', async (t) => {
  const upstream = await startUpstream() // node:http, default 16 KiB header limit
  t.teardown(() => upstream.close())
  const routes = [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'asserted', prefix: '/asserted', upstream: upstream.url, auth: 'required', assertion: { audience: 'https://orders.internal' } },
  ]
  const tokens = { maxTokenBytes: 16_384 }
  const gw = await startGateway(t, baseConfig(key, routes, { identity: identity(), tokens }))
  const token = signWith(key, goodClaims({ sub: 'alice', groups: fiveHundredGroups() }))
  t.ok(token.length > 12_000, `the token itself is ${token.length} bytes`)

  const res = await getWith(gw.url, '/api/x', token)
  t.equal(res.status, 200, 'the upstream accepted the request')
  const got = upstream.requests.at(-1)!.headers
  t.equal(got['x-user-id'], 'alice', 'small headers are kept')
  t.equal(got['x-user-scopes'], 'orders:read')
  t.equal(got['x-user-groups'], undefined, 'the groups header is left out whole, never cut into a partial list')
  t.equal(got['x-user-claims'], undefined, 'so is the claims header')
  t.same(String(got['x-portcullis-identity-truncated']).split(',').sort(), ['x-user-claims', 'x-user-groups'], 'x-portcullis-identity-truncated names them')
  t.ok(identityBytes(got) <= 8192, `identity headers: ${identityBytes(got)} bytes ≤ 8192`)

  // with an assertion on the route, headers and assertion share the budget: the assertion
  // leaves the groups out and says so (signed)
  const asserted = await getWith(gw.url, '/asserted/x', token)
  t.equal(asserted.status, 200, 'the upstream accepted the request with its assertion')
  const headers = upstream.requests.at(-1)!.headers
  const { payload } = decodeJwt(String(headers[HEADER]))
  t.equal(payload.sub, 'alice')
  t.same(payload.omitted_claims, ['groups'], 'omitted_claims names what the assertion left out')
  t.notOk('groups' in payload)
  t.ok(identityBytes(headers) <= 8192, `identity headers + assertion: ${identityBytes(headers)} bytes ≤ 8192`)
  t.equal(gw.gateway.runtime.assertions!.trimmed, 1)

  // a small token: nothing is left out, and nothing says so
  await getWith(gw.url, '/asserted/x', signWith(key, goodClaims({ groups: ['a', 'b'] })))
  const small = upstream.requests.at(-1)!.headers
  t.equal(small['x-user-groups'], '["a","b"]')
  t.equal(small['x-portcullis-identity-truncated'], undefined)
  t.same(decodeJwt(String(small[HEADER])).payload.groups, ['a', 'b'])
  t.notOk('omitted_claims' in decodeJwt(String(small[HEADER])).payload)
})

t.test('the control: without the budget the same token makes a request the upstream refuses', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], {
    identity: identity({ assertion: undefined, maxHeaderBytes: 65_536 }),
    tokens: { maxTokenBytes: 16_384 },
  }))
  const res = await getWith(gw.url, '/api/x', signWith(key, goodClaims({ groups: fiveHundredGroups() })))
  t.not(res.status, 200, `refused (${res.status}): ~22 KB of identity headers is more than Node accepts`)
  t.equal(upstream.requests.length, 0, 'the upstream never handled it')
})

t.test('a token claim cannot forge the truncation marker or the omitted list', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'asserted', prefix: '/asserted', upstream: upstream.url, auth: 'required', assertion: { audience: 'https://orders.internal' } },
  ], { identity: identity() }))
  // JSON.parse makes "__proto__" an own property, as it is in a decoded token
  const proto = JSON.parse('{"__proto__": {"admin": true}}') as Record<string, unknown>
  const token = signWith(key, { ...goodClaims({ omitted_claims: ['nothing'], 'x-portcullis-identity-truncated': 'x' }), ...proto })
  t.equal((await getWith(gw.url, '/asserted/x', token)).status, 200)
  const got = upstream.requests.at(-1)!.headers
  t.equal(got['x-portcullis-identity-truncated'], undefined)
  const { payload } = decodeJwt(String(got[HEADER]))
  t.notOk('omitted_claims' in payload, "a token's own omitted_claims is not copied into the assertion")
  t.ok(Object.hasOwn(payload, '__proto__'), 'a claim named __proto__ is copied as a claim…')
  t.same(Object.getOwnPropertyDescriptor(payload, '__proto__')?.value, { admin: true })
  t.equal(payload.admin, undefined, '…never as a prototype')
})

t.test('client-sent x-portcullis-* headers never arrive, with or without identity.assertion configured', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
  ]))
  const token = signWith(key, goodClaims())
  const spoof: Array<[string, string]> = [
    [HEADER, 'forged'], ['X-Portcullis-Assertion', 'forged'], ['x_portcullis_assertion', 'forged'],
    ['x-portcullis-identity-truncated', 'x-user-id'], ['X-Portcullis-Whatever', '1'],
  ]
  for (const [path, tk] of [['/api/x', token], ['/open/x', undefined]] as const) {
    t.equal((await getWith(gw.url, path, tk, spoof)).status, 200)
    const names = upstream.requests.at(-1)!.rawHeaders.filter((_, i) => i % 2 === 0).map(n => n.toLowerCase().replaceAll('_', '-'))
    t.same(names.filter(n => n.startsWith('x-portcullis-')), [], `${path}: none arrives`)
  }
})
