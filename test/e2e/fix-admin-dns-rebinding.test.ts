import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { loadConfigText } from '../../src/config/load.js'
import { ConfigError } from '../../src/errors.js'

// Found by an adversarial review (stop 29): the admin listener answered any Host. DNS
// rebinding — a page on attacker.example whose name is re-pointed at 127.0.0.1 — makes the
// victim's browser send `Host: attacker.example:<admin port>` to the admin listener, and the
// page, being same-origin with that name, reads the answers: /metrics (routes, issuers,
// traffic), /readyz. Now the admin listener answers an IP literal, `localhost` or a name in
// admin.allowedHosts, and refuses anything else with 421 before any route runs.

const key = makeKey('EdDSA')
const ADMIN_TOKEN = 'admin-token-for-the-rebinding-suite-0123456789'

async function check (t: Test, allowedHosts: string[] | undefined): Promise<void> {
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    admin: { token: ADMIN_TOKEN, ...(allowedHosts === undefined ? {} : { allowedHosts }) },
  }))
  const port = new URL(gw.adminUrl).port
  const reloads = (): number => gw.gateway.reloads.succeeded + gw.gateway.reloads.failed

  const refused: Array<[string, Array<[string, string]>]> = [
    ['a rebound name', [['host', `attacker.example:${port}`]]],
    ['a rebound name without port', [['host', 'attacker.example']]],
    ['a subdomain of localhost', [['host', `localhost.attacker.example:${port}`]]],
    ['an allowed name as a suffix', [['host', `portcullis-admin.monitoring.svc.attacker.example:${port}`]]],
    ...(allowedHosts === undefined ? [['a name not configured', [['host', `portcullis-admin.monitoring.svc:${port}`]]] as [string, Array<[string, string]>]] : []),
    ['two Host lines, the first allowed', [['host', `127.0.0.1:${port}`], ['host', `attacker.example:${port}`]]],
    ['a malformed Host', [['host', `127.0.0.1:${port}/x`]]],
  ]
  for (const [name, headers] of refused) {
    for (const path of ['/metrics', '/readyz', '/healthz', '/admin/users/alice/sessions']) {
      const res = await raw(gw.adminUrl, path, { headers: [...headers, ['authorization', `Bearer ${ADMIN_TOKEN}`]] })
      t.equal(res.status, 421, `${name}, ${path}: 421`)
      t.equal(res.json().code, 'admin_host_not_allowed', `${name}, ${path}: admin_host_not_allowed`)
      t.notOk(res.body.includes('portcullis_'), `${name}, ${path}: no metric in the answer`)
    }
    const reload = await raw(gw.adminUrl, '/admin/reload', { method: 'POST', headers: [...headers, ['authorization', `Bearer ${ADMIN_TOKEN}`]] })
    t.equal(reload.status, 421, `${name}: POST /admin/reload refused too, token or not`)
  }
  t.equal(reloads(), 0, 'no reload ran')

  const names = allowedHosts === undefined ? [] : [`portcullis-admin.monitoring.svc:${port}`, 'PORTCULLIS-ADMIN.monitoring.svc']
  for (const host of [`127.0.0.1:${port}`, '127.0.0.1', `localhost:${port}`, 'LocalHost', `[::1]:${port}`, ...names]) {
    const res = await raw(gw.adminUrl, '/metrics', { headers: [['host', host]] })
    t.equal(res.status, 200, `${host}: answered`)
    t.ok(res.body.includes('portcullis_'), `${host}: the metrics`)
  }
}

t.test('by default the admin listener answers only IP literals and localhost', async (t) => { await check(t, undefined) })
t.test('and the names listed in admin.allowedHosts, in any case', async (t) => { await check(t, ['Portcullis-Admin.monitoring.svc']) })

t.test('admin.allowedHosts takes host names only', async (t) => {
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    admin: { allowedHosts: ['ok.example', 'https://admin.example', 'admin.example:9090', 'a b'] },
  })
  const err = (() => { try { loadConfigText(stringify(config), { env: {} }); return undefined } catch (e) { return e } })()
  t.ok(err instanceof ConfigError, 'refused to load')
  const paths = (err as ConfigError).problems.map(p => p.path)
  t.same(paths.filter(p => p.startsWith('/admin/allowedHosts')).sort(), ['/admin/allowedHosts/1', '/admin/allowedHosts/2', '/admin/allowedHosts/3'], 'each bad entry named by its path')
})
