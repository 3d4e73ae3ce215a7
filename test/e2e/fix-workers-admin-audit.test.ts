import t from 'tap'
import { request as httpRequest } from 'node:http'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { startGatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'

// With `server.workers > 1` the admin API is the primary's, and the primary registered it
// without security events: a refused token, a user's or a jti's revocation left no
// admin_action / user_revoked / jti_revoked line and no count in
// portcullis_security_events_total, where a single process logs and counts every one
// (README "Logs": "Every request, allowed or refused, is an admin_action security event").

const ADMIN_TOKEN = 'admin-token-for-the-workers-audit-suite-0123456789'
const avail = pgAvailability()

function post (url: string, token: string, body?: unknown): Promise<number> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { authorization: `Bearer ${token}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    const req = httpRequest(url, { method: 'POST', headers, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end(body === undefined ? undefined : JSON.stringify(body))
  })
}

function get (url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpRequest(url, { agent: false }, (res) => {
      let text = ''
      res.on('data', (c: Buffer) => { text += c.toString() })
      res.on('end', () => resolve(text))
    }).on('error', reject).end()
  })
}

interface EventLine { pid: number, event: string, action?: string, outcome?: string, code?: string, via?: string, target?: string, reason?: string, jti?: string }

t.test('fix-workers-admin-audit: the primary\'s admin API logs and counts its security events as a single process does', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const url = await pg.createDatabase('workers_audit')
  const seed = await openStore({ url })
  await usersAdd(seed, { name: 'alice', password: 'correct horse battery', scopes: [] })
  const longName = 'l'.repeat(120)
  await usersAdd(seed, { name: longName, password: 'correct horse battery', scopes: [] })
  await seed.close()
  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    server: { workers: 2 },
    admin: { token: ADMIN_TOKEN },
    logging: { level: 'info' },
  })
  config.database = { url }
  const gw = await startGatewayProcess(t, { config, key, name: 'workers-audit' })
  // ready means one worker answers; the metrics below are read with both
  await until('both workers listening', async () => (JSON.parse(await get(`${gw.adminUrl}/admin/workers`)) as { workers: Array<{ listening: boolean }> }).workers.filter(w => w.listening).length === 2, PROCESS_WAIT_MS)

  const jti = `audit-${Date.now()}`
  t.equal(await post(`${gw.adminUrl}/admin/users/alice/revoke`, 'a-wrong-admin-token-0123456789-0123456789'), 401, 'a wrong token: 401')
  t.equal(await post(`${gw.adminUrl}/admin/users/alice/revoke`, ADMIN_TOKEN), 200, 'a user revoked')
  const jtiStatus = await post(`${gw.adminUrl}/admin/revocations/jti`, ADMIN_TOKEN, { jti, exp: Math.floor(Date.now() / 1000) + 600 })
  t.ok(jtiStatus >= 200 && jtiStatus < 300, `a jti revoked (${jtiStatus})`)

  // the lines reach stdout within a second (the logger's flush interval)
  const events = (): EventLine[] => gw.output().split('\n').filter(l => l.includes('"msg":"security_event"')).map(l => JSON.parse(l) as EventLine)
  const wanted = (e: EventLine): boolean => e.event === 'admin_action' || e.event === 'user_revoked' || e.event === 'jti_revoked'
  await until('five security events', () => events().filter(wanted).length >= 5, 10_000).catch(() => {})
  const lines = events().filter(wanted)
  t.match(lines, [
    { event: 'admin_action', action: 'revoke_user', via: 'api', target: 'alice', outcome: 'error', code: 'admin_unauthorized' },
    { event: 'user_revoked', reason: 'admin' },
    { event: 'admin_action', action: 'revoke_user', via: 'api', target: 'alice', outcome: 'ok' },
    { event: 'jti_revoked', jti, reason: 'admin' },
    { event: 'admin_action', action: 'revoke_jti', via: 'api', target: jti, outcome: 'ok' },
  ], 'each request is an admin_action, each revocation its own event')
  t.equal(lines.length, 5, 'and nothing twice')
  t.ok(lines.every(l => l.pid === gw.pid), 'logged by the primary, whose admin API it is')

  // counted in the primary's /metrics, beside every worker's metrics (one family, summed)
  const metrics = await get(`${gw.adminUrl}/metrics`)
  const count = (labels: string): number => Number(new RegExp(`^portcullis_security_events_total\\{${labels}\\} ([0-9]+)$`, 'm').exec(metrics)?.[1] ?? 0)
  t.equal(count('event="admin_action",label="revoke_user"'), 2, 'admin_action revoke_user: the refused one and the allowed one')
  t.equal(count('event="admin_action",label="revoke_jti"'), 1, 'admin_action revoke_jti')
  t.equal(count('event="user_revoked",label="admin"'), 1, 'user_revoked')
  t.equal(count('event="jti_revoked",label="admin"'), 1, 'jti_revoked')
  t.equal(metrics.match(/^# TYPE portcullis_security_events_total /gm)?.length, 1, 'one metric family, not one per process')
  t.match(metrics, /^portcullis_workers 2$/m, 'the primary\'s view of its workers')
  t.match(metrics, /^# TYPE portcullis_requests_total counter$/m, 'the workers\' metrics')
  t.match(metrics, /^nodejs_heap_size_used_bytes [0-9]/m, 'the workers\' process metrics')

  // fix-workers-reload-unreported: a fleet reload is counted and reported once, by the primary
  // — one the primary refused was neither an event nor counted, one that succeeded was an
  // event per worker
  const { readFileSync, writeFileSync } = await import('node:fs')
  const good = readFileSync(gw.configFile, 'utf8')
  writeFileSync(gw.configFile, good.replace(/^routes:/m, 'routes: [\n'))
  t.equal(await post(`${gw.adminUrl}/admin/reload`, ADMIN_TOKEN), 422, 'a broken file: the reload is refused')
  writeFileSync(gw.configFile, good)
  t.equal(await post(`${gw.adminUrl}/admin/reload`, ADMIN_TOKEN), 200, 'the good file: reloaded in every worker')
  const reloadEvents = (): EventLine[] => events().filter(e => e.event === 'config_reloaded' || e.event === 'config_reload_failed')
  await until('two reload events', () => reloadEvents().length >= 2, 10_000).catch(() => {})
  t.match(reloadEvents(), [{ event: 'config_reload_failed', pid: gw.pid }, { event: 'config_reloaded', pid: gw.pid }], 'one event each, from the primary')
  t.equal(reloadEvents().length, 2, 'not one per worker')
  const after = await get(`${gw.adminUrl}/metrics`)
  t.match(after, /^portcullis_config_reloads_total\{result="failure"\} 1$/m, 'the refused reload is counted')
  t.match(after, /^portcullis_config_reloads_total\{result="success"\} 1$/m, 'the fleet\'s reload is counted once')

  // fix-admin-long-user-name, on the primary's admin listener too: Fastify's 100-character
  // path-parameter limit answered 414 for a name `users add` accepts
  const sessions = await fetch(`${gw.adminUrl}/admin/users/${longName}/sessions`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
  t.equal(sessions.status, 200, 'a 120-character user\'s sessions are listed')
})
