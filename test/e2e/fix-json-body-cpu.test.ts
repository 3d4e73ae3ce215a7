import t from 'tap'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'

// fix-json-body-cpu (a stop 43 review of resource exhaustion): the duplicate-member check on the
// bodies the gateway reads (src/json-body.ts) builds momoa's syntax tree of the whole body: a
// 64 KB body of 32,000 values cost 33 ms, on login, refresh and logout alike, before the login
// throttle counted anything — 30 requests/s held a core. A body holding more values than any
// the gateway reads (1,000), or nested deeper (16), is now refused from what JSON.parse built,
// before the syntax tree, and before any password is checked. Real parts: a gateway on
// 127.0.0.1, the embedded store.

t.test('a body of more values than any the gateway reads is refused before anything else', async (t) => {
  const store = await openStore({ dataDir: 'memory://' })
  t.teardown(() => store.close())
  await usersAdd(store, { name: 'alice', password: 'pw-alice', scopes: [] })
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], { tokens: { refresh: { transport: 'body' } } }), { store })
  const post = async (path: string, body: string): Promise<{ status: number, code: string }> => {
    const res = await raw(gw.url, path, { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    return { status: res.status, code: String(res.json().code) }
  }
  const wide = `[${new Array(20_000).fill('0').join(',')}]`
  // the right password, and a member the login endpoint ignores, holding 20,000 values
  t.same(await post('/auth/login', `{"username":"alice","password":"pw-alice","x":${wide}}`), { status: 400, code: 'bad_request' }, 'login: 400, not a login')
  t.same(await post('/auth/refresh', `{"refresh_token":"x","x":${wide}}`), { status: 400, code: 'bad_request' }, 'refresh: 400')
  t.same(await post('/auth/login', wide), { status: 400, code: 'bad_request' }, 'a bare array: 400')
  const deep = '{"username":"alice","password":"pw-alice","x":' + '['.repeat(40) + ']'.repeat(40) + '}'
  t.same(await post('/auth/login', deep), { status: 400, code: 'bad_request' }, 'nested 40 deep: 400')
  // what the endpoints really take still works
  const ok = await raw(gw.url, '/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"username":"alice","password":"pw-alice","client":{"name":"cli","tags":["a","b"]}}' })
  t.equal(ok.status, 200, 'a login with a small extra member is still a login')
})
