/**
 * Regression (issue 9 item 8): no statement or lock timeout, so a transaction holding the
 * session's row lock (a frozen replica, a stuck operator query) hung /auth/refresh
 * forever. Every pooled connection now carries `lock_timeout` and `statement_timeout`
 * (database.lockTimeoutMs / statementTimeoutMs): the refresh fails with 503
 * store_unavailable (Retry-After) within about the lock timeout, and works again once the
 * lock is gone. Real PostgreSQL, a real second connection holding the lock.
 */
import t from 'tap'
import pg from 'pg'
import { StoreUnavailableError } from '../../src/sessions/errors.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import { MIGRATION_LOCK_KEY } from '../../src/sessions/migrations.js'
import { QUERY_TIMEOUT_MARGIN_MS } from '../../src/sessions/pg-store.js'
import { addUser } from '../../src/sessions/users.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const LOCK_TIMEOUT_MS = 400
/** what the test tolerates on top of the lock timeout (a loaded 2-core box) */
const SLACK_MS = 1_500
/** without a timeout the refresh would wait this long and more: the test gives up here */
const HANG_MS = 5_000

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('stuck_lock')
  const store = await openStore({ url, lockTimeoutMs: LOCK_TIMEOUT_MS, statementTimeoutMs: 2_000 })
  t.teardown(() => store.close())
  const clock = makeClock()
  const svc = new SessionService({ store, clock, signAccessToken: makeTestSigner(clock).sign })
  await addUser(store, { name: 'alice', password: 'pw' }, clock())

  t.test('a stuck FOR UPDATE holder makes refresh fail fast with 503, not hang', async (t) => {
    const p = await svc.login('alice', 'pw')
    const holder = new pg.Client({ connectionString: url })
    await holder.connect()
    t.teardown(() => holder.end())
    await holder.query('BEGIN')
    // the rows a refresh locks: the session row (and, for a legacy token, its refresh_tokens row)
    await holder.query('SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE', [p.sid])

    const t0 = performance.now()
    const outcome = await Promise.race([
      svc.refresh(p.refreshToken).then(() => 'refreshed', (err: unknown) => err),
      new Promise((resolve) => setTimeout(() => resolve('hung'), HANG_MS).unref()),
    ])
    const elapsedMs = performance.now() - t0
    t.type(outcome, StoreUnavailableError, 'store unavailable, not a hang')
    t.match(outcome, { code: 'store_unavailable', statusCode: 503, retryAfterSec: 5 })
    t.match((outcome as Error).cause, { code: '55P03' }, 'the cause is PostgreSQL lock_not_available')
    t.ok(elapsedMs >= LOCK_TIMEOUT_MS * 0.9 && elapsedMs < LOCK_TIMEOUT_MS + SLACK_MS, `answered after ${elapsedMs.toFixed(0)} ms (lock_timeout ${LOCK_TIMEOUT_MS} ms)`)

    await holder.query('ROLLBACK')
    const again = await svc.refresh(p.refreshToken)
    t.ok(again.accessToken, 'the same refresh token works once the lock is gone (the failed attempt changed nothing)')
  })

  t.test('migrations are not bound by the request timeouts (a slow index build, a replica waiting for another)', async (t) => {
    const fresh = await cluster.createDatabase('tight_timeouts')
    // 1 ms would fail the migration statements, and the second replica's wait on the lock
    const [a, b] = await Promise.all([openStore({ url: fresh, statementTimeoutMs: 1, lockTimeoutMs: 1 }), openStore({ url: fresh, statementTimeoutMs: 1, lockTimeoutMs: 1 })])
    t.teardown(async () => { await a.close(); await b.close() })
    t.same(await a.migrate(), [], 'both opened and migrated')
  })

  // The migration ran on a pooled connection, which carries the request timeouts from its
  // first statement: the statement that lifted them was itself cancelled when it outlasted a
  // 1 ms statement_timeout (57014 on a loaded machine), and the pool's client-side read
  // timeout (statement timeout + QUERY_TIMEOUT_MARGIN_MS) ended a replica's wait for another's
  // migration — as here, deterministically. Migrations now have a connection of their own.
  t.test('a replica waits for another\'s migration longer than the request timeouts allow', async (t) => {
    const fresh = await cluster.createDatabase('migration_wait')
    const other = new pg.Client({ connectionString: fresh })
    await other.connect()
    t.teardown(() => other.end())
    await other.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY])
    let opened = false
    const opening = openStore({ url: fresh, statementTimeoutMs: 1, lockTimeoutMs: 1 }).then((s) => { opened = true; return s })
    const heldMs = QUERY_TIMEOUT_MARGIN_MS + 1_000
    await new Promise((resolve) => setTimeout(resolve, heldMs))
    t.equal(opened, false, `still waiting after ${heldMs} ms (the other replica holds the migration lock)`)
    await other.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY])
    const s = await opening
    t.teardown(() => s.close())
    t.same(await s.migrate(), [], 'then opened, every migration applied')
  })

  t.test('the settings are on every pooled connection', async (t) => {
    const watcher = new pg.Client({ connectionString: url })
    await watcher.connect()
    t.teardown(() => watcher.end())
    // a connection's own settings are visible only to itself: check the effect instead,
    // six transactions at once (six pooled connections) waiting on a held row
    const alice = (await store.findUserByName('alice'))!
    await watcher.query('BEGIN')
    await watcher.query("SELECT 1 FROM users WHERE name = 'alice' FOR UPDATE")
    const results = await Promise.allSettled(Array.from({ length: 6 }, async () =>
      await store.transaction(async (tx) => await tx.lockUserShared(alice.id))))
    await watcher.query('ROLLBACK')
    t.ok(results.every((r) => r.status === 'rejected' && r.reason instanceof StoreUnavailableError), 'all six connections gave up waiting')
  })
}
