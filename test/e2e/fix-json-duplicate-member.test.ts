import t from 'tap'
import type { Test } from 'tap'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { duplicateMemberName } from '../../src/json-body.js'

// fix-json-duplicate-member: the auth endpoints and the admin API read JSON bodies with
// JSON.parse semantics, where the last of two members of one name wins. A filter in front of
// the gateway that reads the first (a WAF, an audit log, another language's parser) judged a
// different request than the one the gateway ran: `{"username":"alice","password":"x",
// "password":"pw-alice"}` logged alice in while the filter saw the wrong password. Now any
// object that names a member twice, escaped or nested, is a 400 duplicate_json_member and
// nothing happens. Real parts: a gateway on 127.0.0.1, the embedded store, a recording upstream.

const ADMIN_TOKEN = 'd'.repeat(40)

t.test('a JSON body that names a member twice is refused, and nothing happens', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const store = await openStore({ dataDir: 'memory://' })
  await usersAdd(store, { name: 'alice', password: 'pw-alice', scopes: [] })
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
  ], { admin: { token: ADMIN_TOKEN }, tokens: { refresh: { transport: 'body' } } }), { store })
  const post = async (base: string, path: string, body: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
    await raw(base, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body })
  const refused = (t: Test, res: RawResponse, name: string, what: string): void => {
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(res.json().code, 'duplicate_json_member', `${what}: the stable code`)
    t.match(res.json().message, `"${name}" twice`, `${what}: the answer names the member`)
  }

  t.test('login', async (t) => {
    const cases: Array<[string, string, string]> = [
      ['the right password last', '{"username":"alice","password":"wrong","password":"pw-alice"}', 'password'],
      ['the right password first', '{"username":"alice","password":"pw-alice","password":"wrong"}', 'password'],
      ['the user named twice', '{"username":"mallory","username":"alice","password":"pw-alice"}', 'username'],
      ['a name spelled with an escape', '{"username":"alice","\\u0070assword":"wrong","password":"pw-alice"}', 'password'],
      ['twice in a nested object', '{"username":"alice","password":"pw-alice","x":{"a":1,"a":2}}', 'a'],
      ['twice in an object inside an array', '{"username":"alice","password":"pw-alice","x":[1,{"b":1,"b":1}]}', 'b'],
    ]
    for (const [what, body, name] of cases) {
      const res = await post(gw.url, '/auth/login', body)
      refused(t, res, name, what)
      t.notOk(res.body.includes('access_token'), `${what}: no token issued`)
    }
    const ok = await post(gw.url, '/auth/login', '{"username":"alice","password":"pw-alice","x":{"password":1},"y":[{"password":2}]}')
    t.equal(ok.status, 200, 'one name in different objects is not a duplicate: alice logs in')
    const refresh = ok.json().refresh_token as string
    refused(t, await post(gw.url, '/auth/refresh', JSON.stringify({ refresh_token: refresh }).replace('}', `,"refresh_token":${JSON.stringify(refresh)}}`)), 'refresh_token', 'refresh with the token twice')
    refused(t, await post(gw.url, '/auth/logout', `{"refresh_token":"x","refresh_token":${JSON.stringify(refresh)}}`), 'refresh_token', 'logout with a second token')
    const again = await post(gw.url, '/auth/refresh', JSON.stringify({ refresh_token: refresh }))
    t.equal(again.status, 200, 'the refused refresh and logout ended nothing: the refresh token still works')
  })

  t.test('the admin API', async (t) => {
    const token = signWith(key, goodClaims({ jti: 'jti-dup', sub: 'alice' }))
    const exp = Math.floor(Date.now() / 1000) + 600
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` }
    refused(t, await post(gw.adminUrl, '/admin/revocations/jti', `{"jti":"other","jti":"jti-dup","exp":${exp}}`, admin), 'jti', 'a jti revocation naming two jtis')
    refused(t, await post(gw.adminUrl, '/admin/revocations/token', `{"token":"x","token":${JSON.stringify(token)}}`, admin), 'token', 'a token revocation naming two tokens')
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    t.equal(res.status, 200, 'nothing was revoked: the token still opens its route')
  })

  t.test('a body nested deeper than the member walk can go is a 400, never a 500', async (t) => {
    // JSON.parse takes these; momoa's recursive parser overflows its stack on them
    const deep: Array<[string, string]> = [
      ['arrays 20,000 deep', '['.repeat(20_000) + ']'.repeat(20_000)],
      ['objects 10,000 deep', '{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000)],
    ]
    const readers: Array<[string, string, Record<string, string>]> = [
      [gw.url, '/auth/login', {}],
      [gw.adminUrl, '/admin/revocations/jti', { authorization: `Bearer ${ADMIN_TOKEN}` }],
    ]
    for (const [what, body] of deep) {
      for (const [base, path, headers] of readers) {
        const res = await post(base, path, body, headers)
        t.equal(res.status, 400, `${what} to ${path}: 400`)
        t.equal(res.json().code, 'bad_request', `${what} to ${path}: bad_request`)
        t.equal(res.json().message, 'the body is nested too deeply', `${what} to ${path}: says why`)
      }
    }
    t.equal((await post(gw.url, '/auth/login', '{"username":"alice","password":"pw-alice"}')).status, 200, 'the gateway still serves: alice logs in')
  })

  t.test('fix-json-bom-refused: a body with a byte order mark is read as the JSON parser reads it', async (t) => {
    // secure-json-parse drops a leading U+FEFF; momoa refused it, and the login was a 400
    // "nested too deeply" although the JSON parser had taken the body
    const ok = await post(gw.url, '/auth/login', '\uFEFF{"username":"alice","password":"pw-alice"}')
    t.equal(ok.status, 200, 'alice logs in with a BOM before her body')
    refused(t, await post(gw.url, '/auth/login', '\uFEFF{"username":"alice","password":"x","password":"pw-alice"}'), 'password', 'a BOM does not hide a duplicate')
    const two = await post(gw.url, '/auth/login', '\uFEFF\uFEFF{"username":"alice","password":"pw-alice"}')
    t.equal(two.status, 400, 'two BOMs: the JSON parser refuses it, 400')
  })

  t.test('what the JSON parser refused before is refused as before', async (t) => {
    const before: Array<[string, string]> = [
      ['__proto__', '{"username":"alice","password":"pw-alice","__proto__":{"admin":true}}'],
      ['constructor.prototype', '{"username":"alice","password":"pw-alice","constructor":{"prototype":{"admin":true}}}'],
      ['not JSON', '{"username":"alice",'],
      ['an empty body', ''],
    ]
    for (const [what, body] of before) {
      const res = await post(gw.url, '/auth/login', body)
      t.equal(res.status, 400, `${what}: 400`)
      t.equal(res.json().code, 'bad_request', `${what}: bad_request`)
    }
  })
})

t.test('duplicateMemberName', async (t) => {
  t.equal(duplicateMemberName('{"a":1,"b":2}'), undefined, 'distinct names')
  t.equal(duplicateMemberName('{"a":{"a":{"a":1}}}'), undefined, 'one name at each depth')
  t.equal(duplicateMemberName('[{"a":1},{"a":1}]'), undefined, 'one name in sibling objects')
  t.equal(duplicateMemberName('"a"'), undefined, 'not an object')
  t.equal(duplicateMemberName('{"a":1,"a":1}'), 'a', 'the same name and value')
  t.equal(duplicateMemberName('{"\\u00e9":1,"é":2}'), 'é', 'an escape and the character itself')
  t.equal(duplicateMemberName('{"":1,"":2}'), '', 'the empty name twice')
  t.equal(duplicateMemberName('[[[{"x":[{"k":1,"k":2}]}]]]'), 'k', 'deep in arrays')
  t.throws(() => duplicateMemberName('['.repeat(20_000) + ']'.repeat(20_000)), RangeError, 'too deep for the walk: throws (the parser answers 400)')
})
