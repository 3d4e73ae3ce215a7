import t from 'tap'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { openStore } from '../../src/sessions/store.js'

// fix-admin-framework-errors (found by a hostile review, stop 33): on the admin listener an
// error Fastify raises before routing — an undecodable URL (`/admin/users/%ff/sessions`), a
// path parameter past its length limit — was answered by Fastify's default handler: its own
// JSON shape (`FST_ERR_BAD_URL`, the URL echoed back), no `cache-control` or `x-request-id`,
// and before the Host check, so a rebound name (DNS rebinding) got a 400 where every other
// request gets 421. Now the admin listener's framework errors go through the Host check and
// the gateway's own error answer, as the public listener's do.

const key = makeKey('EdDSA')
const ADMIN_TOKEN = 'f'.repeat(40)

t.test('the admin listener answers errors before routing in its own shape, after the Host check', async (t) => {
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    admin: { token: ADMIN_TOKEN },
  }), { store: await openStore({ dataDir: 'memory://' }) })
  const port = new URL(gw.adminUrl).port
  const auth: [string, string] = ['authorization', `Bearer ${ADMIN_TOKEN}`]
  for (const [what, path, status, code] of [
    ['an undecodable URL', '/admin/users/%ff/sessions', 400, 'path_rejected'],
    ['an undecodable URL on a health path', '/healthz%ff', 400, 'path_rejected'],
    ['a name past the parameter length limit', `/admin/users/${'n'.repeat(5_000)}/sessions`, 414, 'bad_request'],
  ] as Array<[string, string, number, string]>) {
    const res = await raw(gw.adminUrl, path, { headers: [['host', `127.0.0.1:${port}`], auth] })
    t.equal(res.status, status, `${what}: ${status}`)
    t.equal(res.json().code, code, `${what}: the gateway's stable code (it was FST_ERR_…)`)
    t.notOk(res.body.includes('%ff') || res.body.includes('nnnnnnnn'), `${what}: the URL is not echoed`)
    t.equal(res.headers['cache-control'], 'no-store', `${what}: cache-control no-store`)
    t.ok(typeof res.headers['x-request-id'] === 'string', `${what}: an x-request-id`)
    const rebound = await raw(gw.adminUrl, path, { headers: [['host', `evil.test:${port}`], auth] })
    t.equal(rebound.status, 421, `${what} under a rebound Host: 421 (it was ${status})`)
    t.equal(rebound.json().code, 'admin_host_not_allowed', `${what} under a rebound Host: admin_host_not_allowed`)
  }
  t.equal((await raw(gw.adminUrl, '/healthz', { headers: [['host', `127.0.0.1:${port}`]] })).status, 200, 'control: /healthz answers')
})
