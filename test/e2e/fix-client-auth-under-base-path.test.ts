/**
 * fix-client-auth-under-base-path: the client SDK resolved its auth endpoints relative to
 * `baseUrl`, so `baseUrl: <gateway>/open/` posted the password to `/open/auth/login` — an
 * upstream's route — adopted the token the upstream answered and sent the refresh token
 * there too. Now they resolve from the origin's root (`/auth/`, which no route may take),
 * whatever path baseUrl has; `authPath` names another place on purpose (a gateway mounted
 * under a prefix by a proxy in front of it). baseUrl's path still serves relative API URLs.
 */
import t from 'tap'
import { createClient, type FetchLike } from '../../src/client/index.js'
import { recorder, startEnv } from '../client/helpers.js'
import { startUpstream } from '../fixtures/upstream.js'

/** an upstream that answers an auth request with a token of its own choosing */
const forger = await startUpstream((req, res) => {
  const forged = ['e30', Buffer.from(JSON.stringify({ sub: 'attacker-chosen', scope: 'admin', exp: 4_000_000_000 })).toString('base64url'), 'x'].join('.')
  res.writeHead(200, { 'content-type': 'application/json' })
  res.end(/\/auth\//.test(req.url) ? JSON.stringify({ access_token: forged, token_type: 'Bearer', expires_in: 300, refresh_token: 'upstream-chosen' }) : JSON.stringify({ ok: true, url: req.url }))
})
t.teardown(() => forger.close())

const env = await startEnv(t, {
  transport: 'body',
  routes: [{ name: 'open', prefix: '/open', upstream: forger.url, auth: 'optional' }],
})

t.test('baseUrl with a path: login and refresh go to the gateway, API calls under the path', async (t) => {
  const id = await env.addUser('ava')
  const rec = recorder()
  const c = createClient({ baseUrl: `${env.gw.url}/open/`, transport: 'body', fetch: rec.fetch })
  t.teardown(() => { c.close() })
  await c.login('ava', 'pw-ava')
  await c.refresh()
  t.same(forger.requests.filter((r) => r.url.includes('/auth/')).map((r) => `${r.method} ${r.url}`), [], 'the upstream received no auth request')
  t.equal(rec.count('/auth/login'), 1, 'login at the origin root')
  t.equal(rec.count('/auth/refresh'), 1, 'refresh at the origin root')
  t.equal(c.claims()?.sub, id, "the gateway's token, not the upstream's")
  t.match(await c.json('things/1'), { url: '/open/things/1' }, 'a relative API URL resolves under baseUrl')
  await c.logout()
  t.equal(rec.count('/auth/logout'), 1, 'logout at the origin root')
})

t.test('authPath: a gateway mounted under a prefix by a proxy in front of it', async (t) => {
  const id = await env.addUser('bo')
  // the front proxy: strips /gw before the gateway
  const front: FetchLike = async (input, init) => {
    const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
    if (url.pathname.startsWith('/gw/')) url.pathname = url.pathname.slice(3)
    return await fetch(url, init)
  }
  const rec = recorder(front)
  const c = createClient({ baseUrl: `${env.gw.url}/gw/`, authPath: '/gw/auth/', transport: 'body', fetch: rec.fetch })
  t.teardown(() => { c.close() })
  await c.login('bo', 'pw-bo')
  t.equal(rec.count('/gw/auth/login'), 1, 'login where authPath says')
  t.equal(c.claims()?.sub, id)
})

t.test('authPath must be an absolute path on the gateway\'s origin', async (t) => {
  for (const authPath of ['auth/', '//evil.test/auth/', 'https://evil.test/auth/', '/a/../auth/', '/auth/?x', '\\\\evil.test\\auth']) {
    t.throws(() => createClient({ baseUrl: env.gw.url, transport: 'body', authPath }), TypeError, JSON.stringify(authPath))
  }
})
