/**
 * PostgreSQL going away under a running gateway (DESIGN.md lifecycle steps 2 and 5):
 * verification stays stateless (proxied requests keep working), every endpoint that
 * needs the store answers 503 `store_unavailable` (never 500), readiness follows the
 * revocation feed, and after recovery the feed reloads the denylist, so a revocation
 * committed while it was not listening (its NOTIFY lost) is still honoured — without a
 * restart of the gateway.
 */
import t from 'tap'
import type { Test } from 'tap'
import pg from 'pg'
import { sessionsRevoke, usersAdd } from '../../src/sessions/admin-commands.js'
import { openStore } from '../../src/sessions/store.js'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import type { RawResponse, StartedGateway } from '../fixtures/gateway.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { startUpstream } from '../fixtures/upstream.js'

const key = makeKey('EdDSA')
const ADMIN_TOKEN = 'admin-token-for-the-db-faults-suite'
const ORIGIN = 'https://app.example.test'
const COOKIE = '__Host-portcullis-rt'
const DB = 'faults'

async function waitFor (fn: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  t.test('PostgreSQL stops and comes back under a running gateway', async (t) => {
    const cluster = await startPostgres(t)
    const url = await cluster.createDatabase(DB)
    const upstream = await startUpstream()
    t.teardown(() => upstream.close())
    // a second writer on the same database: the CLI or another replica
    const other = await openStore({ url, poolSize: 1 })
    t.teardown(() => other.close())
    for (const name of ['alice', 'bob', 'carol']) await usersAdd(other, { name, password: `pw-${name}`, scopes: ['orders:read'] })

    const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], {
      admin: { token: ADMIN_TOKEN },
      tokens: { allowedOrigins: [ORIGIN] },
    }), { store: await openStore({ url }) })

    const json = (path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
      raw(gw.url, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    const login = async (user: string): Promise<{ access: string, rt: string, sid: string }> => {
      const res = await json('/auth/login', { username: user, password: `pw-${user}` })
      if (res.status !== 200) throw new Error(`login ${user}: ${res.status} ${res.body}`)
      const access = res.json().access_token as string
      const rt = /__Host-portcullis-rt=([^;]+)/.exec(String(res.headers['set-cookie']))![1]!
      return { access, rt, sid: JSON.parse(Buffer.from(access.split('.')[1]!, 'base64url').toString()).sid }
    }
    const api = (g: StartedGateway, access: string): Promise<RawResponse> => raw(g.url, '/api/x', { headers: { authorization: `Bearer ${access}` } })
    const readyz = (): Promise<RawResponse> => raw(gw.adminUrl, '/readyz')
    // ready and current (not merely serving with the last denylist)
    const isReady = async (): Promise<boolean> => {
      const r = await readyz()
      return r.status === 200 && r.json().status === 'ready'
    }
    const isDegraded = async (): Promise<boolean> => {
      const r = await readyz()
      return r.status === 200 && r.json().status === 'degraded'
    }
    const revoked = async (access: string): Promise<boolean> => {
      const r = await api(gw, access)
      return r.status === 401 && r.json().code === 'token_revoked'
    }
    const expectUnavailable = (t: Test, res: RawResponse, label: string): void => {
      t.equal(res.status, 503, `${label}: 503`)
      t.equal(res.json().code, 'store_unavailable', `${label}: code store_unavailable`)
      t.ok(Number(res.headers['retry-after']) > 0, `${label}: Retry-After`)
    }

    t.equal((await readyz()).status, 200, 'ready at start')
    const alice = await login('alice')
    const bob = await login('bob')
    const carol = await login('carol')

    await t.test('database down', async (t) => {
      await cluster.stop()
      t.equal((await api(gw, alice.access)).status, 200, 'a valid access token still passes (stateless verification)')
      expectUnavailable(t, await json('/auth/login', { username: 'alice', password: 'pw-alice' }), 'login')
      expectUnavailable(t, await json('/auth/refresh', {}, { cookie: `${COOKIE}=${alice.rt}`, origin: ORIGIN }), 'refresh')
      expectUnavailable(t, await json('/auth/logout', {}, { cookie: `${COOKIE}=${alice.rt}`, origin: ORIGIN, authorization: `Bearer ${alice.access}` }), 'logout')
      expectUnavailable(t, await json('/auth/logout-all', {}, { authorization: `Bearer ${alice.access}` }), 'logout-all')
      const list = await raw(gw.adminUrl, '/admin/users/alice/sessions', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })
      expectUnavailable(t, list, 'admin list sessions')
      t.equal((await json('/auth/refresh', {}, { cookie: `${COOKIE}=garbage`, origin: ORIGIN })).status, 400, 'a malformed refresh token is refused without the store')

      // issue 9 item 4: revocation.maxStaleness 0 (default) keeps the fleet in the load balancer
      t.ok(await waitFor(isDegraded, 5000), 'readiness turns degraded (200, not 503) once the feed notices')
      const r = await readyz()
      t.equal(r.status, 200)
      t.equal(r.json().status, 'degraded')
      t.match(r.json().reasons, [/revocation.*reconnecting.*serving with the last denylist/])
      t.match(r.json().checks.find((c: { name: string }) => c.name === 'revocation'), { state: 'degraded', detail: { stalenessMs: Number } })
      t.equal((await raw(gw.adminUrl, '/healthz')).status, 200, 'still alive')
      t.equal((await api(gw, alice.access)).status, 200, 'still verifying')
    })

    await t.test('database back: a revocation committed right after restart is honoured', async (t) => {
      await cluster.start()
      // another replica or the CLI logs bob out right away, before or while this
      // gateway's feed reconnects: either the NOTIFY or the reload must deliver it
      t.same(await sessionsRevoke(other, { user: 'bob' }), [bob.sid])
      t.ok(await waitFor(isReady, 15_000), '/readyz 200 again within a few seconds')
      t.ok(await waitFor(() => revoked(bob.access), 2000), 'bob\'s access token → 401 token_revoked')
      t.equal((await api(gw, alice.access)).status, 200, 'alice still passes')
      const again = await json('/auth/login', { username: 'alice', password: 'pw-alice' })
      t.equal(again.status, 200, 'login works')
      const refreshed = await json('/auth/refresh', {}, { cookie: `${COOKIE}=${alice.rt}`, origin: ORIGIN })
      t.equal(refreshed.status, 200, 'the refresh token that failed with 503 still works')
    })

    await t.test('a NOTIFY lost while the feed is disconnected is recovered by the reload', async (t) => {
      // Deterministic version of the race above: keep the feed out of the database while
      // a revocation commits, so its NOTIFY reaches nobody here; only the reload can deliver it.
      const admin = new pg.Client({ connectionString: cluster.url })
      await admin.connect()
      t.teardown(() => admin.end())
      await other.findUserByName('carol') // the writer's one pooled connection is open before the door closes
      await admin.query(`ALTER DATABASE ${DB} ALLOW_CONNECTIONS false`)
      t.teardown(() => admin.query(`ALTER DATABASE ${DB} ALLOW_CONNECTIONS true`).catch(() => {}))
      const killed = await admin.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'portcullis-revocation-feed'", [DB])
      t.equal(killed.rowCount, 1, 'the feed\'s listen connection is cut')
      t.ok(await waitFor(isDegraded, 5000), 'degraded while the feed cannot listen')

      t.same(await sessionsRevoke(other, { session: carol.sid }), [carol.sid], 'revoked by the other writer meanwhile')
      await new Promise((resolve) => setTimeout(resolve, 300))
      t.equal((await api(gw, carol.access)).status, 200, 'the NOTIFY was lost: this gateway does not know yet')
      t.ok(await isDegraded(), 'still degraded')

      await admin.query(`ALTER DATABASE ${DB} ALLOW_CONNECTIONS true`)
      t.ok(await waitFor(isReady, 15_000), 'ready again after the reload')
      t.ok(await revoked(carol.access), 'carol\'s access token → 401 token_revoked, without a restart')
      t.equal((await api(gw, alice.access)).status, 200, 'alice still passes')
      t.ok(await revoked(bob.access), 'bob stays revoked after the reload')
      const status = gw.gateway.sessions!.feed.status
      t.ok(status.reloads >= 3, `the feed reloaded on each reconnect (${status.reloads})`)
    })
  })
}
