import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { baseConfig, makeKey, raw, startGateway, type RawResponse, type StartedGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'

// Regression tests for the auth endpoints' part of issue 9:
// - item 3: logout and logout-all accepted an access token that was already revoked (they
//   re-implemented extract + verify and skipped the denylist); they now use the one
//   authenticate stage;
// - item 7: /auth/* decision lines said `route: null, reason: unrouted`;
// - item 9: the CSRF "same origin" ignored trustProxy, so a same-origin SPA behind a
//   TLS-terminating load balancer was refused.

const ORIGIN = 'https://app.example.test'

t.test('auth endpoints', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const store = await openStore({ dataDir: 'memory://' })
  await usersAdd(store, { name: 'alice', password: 'pw-alice', scopes: ['orders:read'] })
  await usersAdd(store, { name: 'bob', password: 'pw-bob', scopes: ['orders:read'] })
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { out += String(chunk); done() } }))
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], {
    server: { trustProxy: ['127.0.0.1'] },
    tokens: { refresh: { transport: 'both' }, allowedOrigins: [ORIGIN] },
  })
  const gw = await startGateway(t, config, { store, logger })
  const json = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
    raw(gw.url, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const login = async (gateway: StartedGateway, user: string): Promise<{ access: string, refresh: string }> => {
    const res = await raw(gateway.url, '/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: user, password: `pw-${user}` }) })
    t.equal(res.status, 200, `${user} logs in`)
    return { access: res.json().access_token, refresh: res.json().refresh_token }
  }

  t.test('fix-logout-accepts-revoked-token: a revoked access token is refused by logout and logout-all', async (t) => {
    const a = await login(gw, 'alice')
    // alice logs out: her access token is revoked (denylisted until it expires)
    t.equal((await json('/auth/logout', { refresh_token: a.refresh }, { authorization: `Bearer ${a.access}` })).status, 204)
    t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${a.access}` } })).json().code, 'token_revoked', 'the token is revoked')
    // the revoked token cannot log anyone out everywhere any more
    const all = await json('/auth/logout-all', {}, { authorization: `Bearer ${a.access}` })
    t.equal(all.status, 401, 'logout-all with a revoked token → 401')
    t.equal(all.json().code, 'token_revoked')
    // nor name anything at logout: alone it is a 401; beside a refresh token it is ignored
    // (fix-logout-refused-beside-refresh-token, test/e2e/fix-logout-trusts-foreign-token.test.ts)
    const alone = await json('/auth/logout', {}, { authorization: `Bearer ${a.access}` })
    t.equal(alone.status, 401, 'logout with a revoked access token alone → 401')
    t.equal(alone.json().code, 'token_revoked')
  })

  t.test('fix-auth-decision-lines: /auth/* decisions name the endpoint', async (t) => {
    await login(gw, 'alice')
    await json('/auth/refresh', { refresh_token: 'not-a-token' })
    await new Promise(resolve => setTimeout(resolve, 20))
    const lines = out.split('\n').filter(l => l.includes('"msg":"decision"')).map(l => JSON.parse(l) as { route: string | null, reason: string, granted: boolean })
    t.ok(lines.some(l => l.route === 'auth.login' && l.granted && l.reason === 'granted'), 'a login line names auth.login')
    t.ok(lines.some(l => l.route === 'auth.refresh' && !l.granted && l.reason === 'invalid_grant'), 'a refused refresh names auth.refresh and its reason')
    t.notOk(lines.some(l => l.route === null && l.reason === 'unrouted'), 'no unrouted line for the auth endpoints')
  })

  t.test('fix-csrf-ignores-trust-proxy: same origin as the trusted proxy saw it', async (t) => {
    const a = await login(gw, 'alice')
    // the SPA is served by the gateway itself on https://gw.example.test behind a TLS-terminating LB
    const behindLb = { cookie: `__Host-portcullis-rt=${a.refresh}`, origin: 'https://gw.example.test', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'gw.example.test', 'sec-fetch-site': 'same-origin' }
    const ok = await json('/auth/refresh', {}, behindLb)
    t.equal(ok.status, 200, 'same-origin behind a trusted proxy: accepted')
    // the same headers from an untrusted peer are not believed
    const direct = await startGateway(t, baseConfig(key, config.routes, { tokens: config.tokens }), { store: await openStore({ dataDir: 'memory://' }) })
    const spoofed = await raw(direct.url, '/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json', ...behindLb }, body: '{}' })
    t.equal(spoofed.status, 403, 'an untrusted peer cannot claim the origin through x-forwarded-*')
    t.equal(spoofed.json().code, 'csrf_origin')
  })
})
