/**
 * Two gateway PROCESSES (replicas A and B) against one PostgreSQL and one upstream, as an
 * operator runs them behind a load balancer (DESIGN.md, "Revocation reaches every replica"):
 * (a) a logout through A is refused by B within a second, measured over many trials;
 * (b) concurrent refreshes of one refresh token spread over both replicas leave exactly
 *     one live successor (grace-window semantics), checked over HTTP and in the database.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import pg from 'pg'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { startGatewayProcess, type GatewayProcess } from '../fixtures/process.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'

const TRIALS = 25
const POLL_INTERVAL_MS = 10
const PROPAGATION_LIMIT_MS = 1000
const CONCURRENT_REFRESHES = 6
const REFRESH_ROUNDS = 5
const PASSWORD = 'replica test password'

interface Res { status: number, json: Record<string, any> }

async function call (base: string, method: string, path: string, opts: { token?: string, body?: unknown } = {}): Promise<Res> {
  const headers: Record<string, string> = {}
  if (opts.token !== undefined) headers.authorization = `Bearer ${opts.token}`
  if (opts.body !== undefined) headers['content-type'] = 'application/json'
  const r = await fetch(base + path, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: AbortSignal.timeout(5000),
  })
  const text = await r.text()
  let json: Record<string, any> = {}
  try { json = JSON.parse(text) as Record<string, any> } catch {}
  return { status: r.status, json }
}

function claimsOf (jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, any>
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function percentile (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1)] ?? NaN
}

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('replicas')

  // the user is made in-process before the replicas start (openStore migrates)
  const store = await openStore({ url })
  await usersAdd(store, { name: 'alice', password: PASSWORD, scopes: ['orders:read'] })
  await store.close()

  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: upstream.url, rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } }], {
    tokens: { refresh: { transport: 'body' } },
    logging: { level: 'warn' },
  })
  config.database = { url }
  // both replicas start at once: the migration lock and the feed's start are exercised too
  const [A, B] = await Promise.all([
    startGatewayProcess(t, { config, key, name: 'replica-a' }),
    startGatewayProcess(t, { config, key, name: 'replica-b' }),
  ]) as [GatewayProcess, GatewayProcess]

  const login = async (gw: GatewayProcess): Promise<{ access: string, refresh: string }> => {
    const r = await call(gw.url, 'POST', '/auth/login', { body: { username: 'alice', password: PASSWORD } })
    if (r.status !== 200) throw new Error(`login failed: ${r.status} ${JSON.stringify(r.json)}`)
    return { access: r.json.access_token as string, refresh: r.json.refresh_token as string }
  }

  t.test('a logout through A is refused by B within a second', async (t) => {
    const fromResponse: number[] = []
    const fromRequest: number[] = []
    for (let trial = 0; trial < TRIALS; trial++) {
      const { access, refresh } = await login(A)
      const before = await call(B.url, 'GET', '/api/orders/1', { token: access })
      if (before.status !== 200) {
        t.fail(`trial ${trial}: the fresh access token from A does not work on B (${before.status} ${JSON.stringify(before.json)})`)
        break
      }
      const sentAt = performance.now()
      const out = await call(A.url, 'POST', '/auth/logout', { token: access, body: { refresh_token: refresh } })
      const answeredAt = performance.now()
      if (out.status !== 204) {
        t.fail(`trial ${trial}: logout answered ${out.status}`)
        break
      }
      let refused: Res | undefined
      let lastStatus = 0
      while (performance.now() - answeredAt < PROPAGATION_LIMIT_MS + 500) {
        const r = await call(B.url, 'GET', '/api/orders/1', { token: access })
        lastStatus = r.status
        if (r.status !== 200) { refused = r; break }
        await sleep(POLL_INTERVAL_MS)
      }
      const refusedAt = performance.now()
      if (refused === undefined) {
        t.fail(`trial ${trial}: B still accepted the token ${Math.round(refusedAt - answeredAt)} ms after the logout (last ${lastStatus})`)
        break
      }
      t.equal(refused.status, 401, `trial ${trial}: B refuses with 401`)
      t.equal(refused.json.code, 'token_revoked', `trial ${trial}: code token_revoked`)
      fromResponse.push(refusedAt - answeredAt)
      fromRequest.push(refusedAt - sentAt)
    }
    t.equal(fromRequest.length, TRIALS, `${TRIALS} trials completed`)
    const worst = Math.max(...fromRequest)
    t.ok(fromRequest.every(ms => ms < PROPAGATION_LIMIT_MS), `every trial under ${PROPAGATION_LIMIT_MS} ms from the logout request (worst ${worst.toFixed(1)} ms)`)
    const a = [...fromResponse].sort((x, y) => x - y)
    const b = [...fromRequest].sort((x, y) => x - y)
    t.comment(`revocation propagation A→B over ${b.length} trials (poll every ${POLL_INTERVAL_MS} ms): ` +
      `from the logout request: median ${percentile(b, 0.5).toFixed(1)} ms, worst ${b.at(-1)?.toFixed(1)} ms; ` +
      `from the 204: median ${percentile(a, 0.5).toFixed(1)} ms, worst ${a.at(-1)?.toFixed(1)} ms`)
  })

  t.test('concurrent refreshes of one token over A and B leave exactly one live successor', async (t) => {
    const db = new pg.Client({ connectionString: url })
    await db.connect()
    t.teardown(() => db.end())
    // the refresh state lives on the session row: the live token's hash and the previous one's
    const stateOf = async (sid: string): Promise<{ current: string, previous: string, rows: number }> => {
      const s = await db.query('SELECT refresh_hash, refresh_prev_hash FROM sessions WHERE id = $1', [sid])
      const r = await db.query('SELECT count(*)::int AS n FROM refresh_tokens WHERE session_id = $1', [sid])
      return { current: s.rows[0].refresh_hash as string, previous: s.rows[0].refresh_prev_hash as string, rows: r.rows[0].n as number }
    }
    const hashOf = (token: string): string => createHash('sha256').update(token, 'utf8').digest('base64url')

    for (let round = 0; round < REFRESH_ROUNDS; round++) {
      const { access, refresh } = await login(round % 2 === 0 ? A : B)
      const sid = claimsOf(access).sid as string
      const replies = await Promise.all(Array.from({ length: CONCURRENT_REFRESHES }, (_, i) =>
        call(i % 2 === 0 ? A.url : B.url, 'POST', '/auth/refresh', { body: { refresh_token: refresh } })))
      const ok = replies.filter(r => r.status === 200)
      t.equal(ok.length, CONCURRENT_REFRESHES, `round ${round}: every concurrent refresh succeeds within the grace window (${replies.map(r => r.status).join(' ')})`)
      const successors = new Set(ok.map(r => r.json.refresh_token as string))
      t.equal(successors.size, 1, `round ${round}: every successful response carries the same new refresh token`)
      const [successor] = [...successors]
      if (successor === undefined) continue
      t.not(successor, refresh, `round ${round}: the successor is a new token`)
      t.ok(ok.every(r => claimsOf(r.json.access_token as string).sid === sid), `round ${round}: the new access tokens belong to the same session`)
      t.same(await stateOf(sid), { current: hashOf(successor), previous: hashOf(refresh), rows: 0 }, `round ${round}: in the database: the successor is the one live token, the original the previous one`)

      // the one successor works, on either replica
      const next = await call(round % 2 === 0 ? B.url : A.url, 'POST', '/auth/refresh', { body: { refresh_token: successor } })
      t.equal(next.status, 200, `round ${round}: the successor refreshes`)
      t.not(next.json.refresh_token, successor, `round ${round}: and is rotated in turn`)
      t.same(await stateOf(sid), { current: hashOf(next.json.refresh_token as string), previous: hashOf(successor), rows: 0 }, `round ${round}: still exactly one live refresh token, no row per rotation`)
    }
  })

  t.test('teardown kills only our replicas, by PID', async (t) => {
    for (const gw of [A, B]) {
      await gw.kill()
      const exit = await gw.exited
      t.equal(exit.signal, 'SIGKILL', `replica pid ${gw.pid} ended`)
    }
  })
}
