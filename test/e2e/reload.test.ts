import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { request as httpRequest } from 'node:http'
import { stringify } from 'yaml'
import { pino } from 'pino'
import { loadConfigFile } from '../../src/config/load.js'
import { buildGateway } from '../../src/app.js'
import { listen } from '../../src/server.js'
import { baseConfig, goodClaims, makeKey, PUBLIC_SCHEME, raw, signWith } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'

// Live configuration changes (issue 12, item 2): the file is validated whole; on success
// routes, policies and keys switch at once and in-flight requests finish on the old ones;
// on failure nothing changes and every problem is reported.

const ADMIN_TOKEN = 'admin-token-for-the-reload-suite-0123456789'

async function start (t: Test, config: Record<string, any>): Promise<{ url: string, adminUrl: string, file: string, write: (c: Record<string, any>) => void, gateway: Awaited<ReturnType<typeof buildGateway>> }> {
  const dir = t.testdir({})
  const file = join(dir, 'gateway.yaml')
  const write = (c: Record<string, any>): void => { writeFileSync(file, stringify(c)) }
  write(config)
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(file, { env: {} })
  const gateway = await buildGateway(load(), { logger: pino({ level: 'silent' }), loadConfig: load })
  const l = await listen(gateway, { handleSignals: false })
  t.teardown(() => l.shutdown())
  return { url: `${PUBLIC_SCHEME}://127.0.0.1:${l.port}`, adminUrl: `http://127.0.0.1:${l.adminPort}`, file, write, gateway }
}

function post (url: string, token: string): Promise<{ status: number, body: any }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method: 'POST', headers: { authorization: `Bearer ${token}` } }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(body) }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('a reload switches routes and scopes; a bad file changes nothing and lists every problem', async (t) => {
  const key = makeKey('EdDSA')
  const a = await startUpstream()
  const b = await startUpstream()
  t.teardown(async () => { await a.close(); await b.close() })
  const routes = [{ name: 'orders', prefix: '/api/orders', upstream: a.url, auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } }]
  const config = baseConfig(key, routes, { admin: { token: ADMIN_TOKEN } })
  const gw = await start(t, config)
  const token = signWith(key, goodClaims({ scope: 'orders:read' }))
  const auth = { authorization: `Bearer ${token}` }
  t.equal((await raw(gw.url, '/api/orders/1', { headers: auth })).status, 200, 'before: the route works')
  t.equal((await raw(gw.url, '/api/items/1', { headers: auth })).status, 404, 'before: no /api/items')
  const hashBefore = gw.gateway.config.hash

  // a new route, and orders moved to another upstream with a stricter rule
  gw.write(baseConfig(key, [
    { ...routes[0], upstream: b.url, scopes: { GET: ['orders:admin'], '*': ['orders:write'] } },
    { name: 'items', prefix: '/api/items', upstream: b.url, auth: 'public' },
  ], { admin: { token: ADMIN_TOKEN } }))
  const ok = await post(`${gw.adminUrl}/admin/reload`, ADMIN_TOKEN)
  t.equal(ok.status, 200, 'reload accepted')
  t.equal(ok.body.ok, true)
  t.not(ok.body.hash, hashBefore, 'the new file is in force')
  t.equal((await raw(gw.url, '/api/items/1')).status, 200, 'the new route is served at once')
  const refused = await raw(gw.url, '/api/orders/1', { headers: auth })
  t.equal(refused.status, 403, 'the new scope rule applies')
  t.equal(refused.json().code, 'insufficient_scope')
  t.equal(b.requests.length, 1, 'the new upstream got the new route\'s request')

  // a broken file: two problems; nothing changes
  gw.write({ ...baseConfig(key, [{ name: 'x', prefix: 'no-slash', upstream: 'ftp://x', auth: 'required' }], { admin: { token: ADMIN_TOKEN } }) })
  const bad = await post(`${gw.adminUrl}/admin/reload`, ADMIN_TOKEN)
  t.equal(bad.status, 422, 'a bad file is refused')
  t.equal(bad.body.ok, false)
  t.equal(bad.body.hash, ok.body.hash, 'the previous configuration stays in force')
  t.ok(bad.body.problems.length >= 2, 'every problem is listed')
  t.ok(bad.body.problems.every((p: { path: string }) => p.path.startsWith('/routes/0/')), 'each with its path')
  t.equal((await raw(gw.url, '/api/items/1')).status, 200, 'the routes in force still serve')
  t.same(gw.gateway.reloads, { succeeded: 1, failed: 1, lastAt: gw.gateway.reloads.lastAt }, 'outcomes are counted')

  // what only a restart can change is refused by name
  gw.write(baseConfig(key, routes, { admin: { token: ADMIN_TOKEN }, server: { port: 1, requestTimeout: '5s' } }))
  const restart = await post(`${gw.adminUrl}/admin/reload`, ADMIN_TOKEN)
  t.equal(restart.status, 422)
  t.same(restart.body.problems.map((p: { path: string }) => p.path).sort(), ['/server/port', '/server/requestTimeout'], 'restart-only settings are named')

  t.equal((await post(`${gw.adminUrl}/admin/reload`, 'wrong-token-wrong-token-wrong-token')).status, 401, 'the admin token is required')
})

t.test('key rotation by reload: the new key signs, tokens of the old key verify while it is listed', async (t) => {
  const oldKey = makeKey('EdDSA', 'old')
  const newKey = makeKey('EdDSA', 'new')
  const up = await startUpstream()
  t.teardown(() => up.close())
  const routes = [{ name: 'api', prefix: '/api', upstream: up.url, auth: 'required' }]
  const gw = await start(t, baseConfig(oldKey, routes, { admin: { token: ADMIN_TOKEN } }))
  const byOld = signWith(oldKey, goodClaims())
  // step 1: the new key first (signs), the old one kept (verifies)
  gw.write(baseConfig(newKey, routes, { admin: { token: ADMIN_TOKEN }, extraKeys: [{ kid: 'old', publicKey: oldKey.publicPem }] }))
  t.equal((await gw.gateway.reload()).ok, true)
  t.equal(gw.gateway.runtime.keys.signing.kid, 'new', 'the new key signs')
  t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${byOld}` } })).status, 200, 'an old token still verifies')
  t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(newKey, goodClaims())}` } })).status, 200, 'a new token verifies')
  const jwks = (await raw(gw.url, '/.well-known/jwks.json')).json()
  t.same(jwks.keys.map((k: { kid: string }) => k.kid), ['new', 'old'], 'both keys published')
  // step 2: the old key removed once its tokens expired; a cached old token stops too
  gw.write(baseConfig(newKey, routes, { admin: { token: ADMIN_TOKEN } }))
  t.equal((await gw.gateway.reload()).ok, true)
  const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${byOld}` } })
  t.equal(res.status, 401, 'a token of the removed key is refused (its verify cache went with the old configuration)')
  t.equal(res.json().code, 'token_unknown_key')
})

t.test('fix-reload-shortened-ttl: a shorter accessTokenTtl by reload refuses no token issued before it', async (t) => {
  // maxTokenLifetime defaults to accessTokenTtl and was applied to tokens issued under the old
  // one: every token a client held became 401 token_lifetime_too_long at the reload
  const key = makeKey('EdDSA')
  const up = await startUpstream()
  t.teardown(() => up.close())
  const routes = [{ name: 'api', prefix: '/api', upstream: up.url, auth: 'required' }]
  const config = (ttl: string): Record<string, any> => {
    const c = baseConfig(key, routes, { admin: { token: ADMIN_TOKEN } })
    return { ...c, tokens: { ...c.tokens, accessTokenTtl: ttl } }
  }
  const gw = await start(t, config('10m'))
  const now = Math.floor(Date.now() / 1000)
  const status = async (token: string): Promise<[number, string | undefined]> => {
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    return [res.status, res.status === 200 ? undefined : res.json().code]
  }
  const before = signWith(key, goodClaims({ iat: now - 30, exp: now + 570 }))
  const tooLongThen = signWith(key, goodClaims({ iat: now - 30, exp: now + 571 }))
  t.same(await status(before), [200, undefined], 'a 10-minute token under accessTokenTtl 10m')
  t.same(await status(tooLongThen), [401, 'token_lifetime_too_long'], 'one second longer: refused, as before')

  gw.write(config('5m'))
  t.equal((await gw.gateway.reload()).ok, true, 'accessTokenTtl 10m → 5m')
  t.same(await status(before), [200, undefined], 'the token issued before the reload still opens its route')
  t.same(await status(signWith(key, goodClaims({ iat: now - 30, exp: now + 570, jti: 'other' }))), [200, undefined], 'and so does another of its time, not yet cached')
  t.same(await status(tooLongThen), [401, 'token_lifetime_too_long'], 'the old limit is the most an earlier token gets')
  const later = Math.floor(Date.now() / 1000) + 2
  t.same(await status(signWith(key, goodClaims({ iat: later, exp: later + 600 }))), [401, 'token_lifetime_too_long'], 'a 10-minute token issued after the reload is refused')
  t.same(await status(signWith(key, goodClaims({ iat: later, exp: later + 300 }))), [200, undefined], 'a 5-minute one is not')

  gw.write(config('20m'))
  t.equal((await gw.gateway.reload()).ok, true, 'lengthened again')
  t.same(await status(tooLongThen), [200, undefined], 'the longer limit covers every token')
})

t.test('in-flight requests finish on the configuration they started with', async (t) => {
  const key = makeKey('EdDSA')
  let release: () => void = () => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const slow = await startUpstream((req, res) => { gate.then(() => res.end(JSON.stringify({ url: req.url }))).catch(() => {}) })
  const other = await startUpstream()
  t.teardown(async () => { await slow.close(); await other.close() })
  const gw = await start(t, baseConfig(key, [{ name: 'p', prefix: '/p', upstream: slow.url, auth: 'public' }], { admin: { token: ADMIN_TOKEN } }))
  const inFlight = raw(gw.url, '/p/1')
  for (let i = 0; i < 200 && slow.requests.length === 0; i++) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(slow.requests.length, 1, 'the request is at the old upstream')
  gw.write(baseConfig(key, [{ name: 'p', prefix: '/p', upstream: other.url, auth: 'public' }], { admin: { token: ADMIN_TOKEN } }))
  t.equal((await gw.gateway.reload()).ok, true)
  t.equal((await raw(gw.url, '/p/2')).status, 200, 'a new request goes to the new upstream')
  t.equal(other.requests.length, 1)
  release()
  const res = await inFlight
  t.equal(res.status, 200, 'the in-flight request finished on the old upstream')
  t.equal(res.json().url, '/p/1')
})
