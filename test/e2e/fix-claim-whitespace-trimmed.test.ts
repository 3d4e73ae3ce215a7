import t from 'tap'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { signAsIdp, startIdpGateway } from '../upstream/helpers.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { validateClaims } from '../../src/sessions/users.js'
import { InvalidUserInputError } from '../../src/sessions/errors.js'

// Found by an adversarial review (stop 29): HTTP drops a header value's leading and trailing
// spaces and tabs (RFC 9110 §5.5), so a token whose `sub` was " alice" — a different subject
// to its issuer — reached the upstream as `x-user-id: alice`, as did a mapped claim. Such a
// claim now makes the token invalid (token_invalid_claim), whoever signed it; the gateway's
// own user claims that would become such a header are refused when they are set.

const key = makeKey('EdDSA')
const identity = { headers: { sub: 'x-user-id', scope: 'x-user-scopes', email: 'x-user-email' } }

t.test('a sub or mapped claim with edge whitespace is refused; inner spaces pass unchanged', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], { identity }))
  const refused: Array<Record<string, unknown>> = [
    { sub: ' alice' }, { sub: 'alice ' }, { sub: '\talice' }, { sub: 'alice\t' }, { sub: ' ' },
    { sub: 'bob', email: 'alice@example.com ' }, { sub: 'bob', email: ' alice@example.com' },
  ]
  for (const claims of refused) {
    const before = upstream.requests.length
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(key, goodClaims(claims))}` } })
    t.equal(res.status, 401, `${JSON.stringify(claims)}: 401`)
    t.equal(res.json().code, 'token_invalid_claim', `${JSON.stringify(claims)}: token_invalid_claim`)
    t.equal(upstream.requests.length, before, `${JSON.stringify(claims)}: the upstream saw nothing`)
  }
  const fine = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(key, goodClaims({ sub: 'alice smith', email: 'a\tb@example.com' }))}` } })
  t.equal(fine.status, 200, 'spaces and tabs inside a value pass')
  const seen = upstream.requests.at(-1)?.headers
  t.equal(seen?.['x-user-id'], 'alice smith', 'and arrive as they are')
  t.equal(seen?.['x-user-email'], 'a\tb@example.com')
})

t.test("an identity provider's token with a padded sub is refused too", async (t) => {
  const { idp, upstream, gw } = await startIdpGateway(t, key)
  const padded = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signAsIdp(idp, { sub: 'alice ' })}` } })
  t.equal(padded.status, 401)
  t.equal(padded.json().code, 'token_invalid_claim')
  t.equal(upstream.requests.length, 0, 'the upstream saw nothing')
  const plain = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signAsIdp(idp, { sub: 'alice' })}` } })
  t.equal(plain.status, 200, 'the same token without the space passes')
  t.equal(upstream.requests[0]?.headers['x-user-id'], 'alice')
})

t.test("a user's claim that would become such a header is refused when it is set", async (t) => {
  for (const value of [' gold', 'gold ', '\tgold', 'go\u0001ld']) {
    t.throws(() => validateClaims({ tier: value }), InvalidUserInputError, `${JSON.stringify(value)}: refused`)
  }
  t.same(validateClaims({ tier: 'gold plus', nested: { note: ' kept as JSON ' }, list: [' x '] }), { tier: 'gold plus', nested: { note: ' kept as JSON ' }, list: [' x '] },
    'inner spaces, and padded text inside objects and lists (sent as JSON), are kept')
  const store = await openStore({ dataDir: 'memory://' })
  t.teardown(() => store.close())
  await t.rejects(usersAdd(store, { name: 'carol', password: 'pw-carol', scopes: [], claims: { tier: 'gold ' } }), /claims\/tier/, 'users add names the claim')
  t.equal(await store.findUserByName('carol'), undefined, 'and creates no user')
})
