/**
 * fix-store-refusals-are-500 and fix-store-deadlocks-are-500 (a hostile review of the session
 * store under partial failure): a store that answers but cannot do the work — a node in
 * recovery or switched read-only (25006), a deadlock victim (40P01) — reached clients as 500
 * `internal_error`, and three of the gateway's own transactions could deadlock each other:
 * - a successful login's throttle update locked the address's row before the account's (scan
 *   order), while another login's admission locks them in kind order (account first);
 * - a logout naming two sessions revoked them in request order, so two logouts naming the
 *   same two the other way round — or one beside "log out everywhere", which locked a user's
 *   sessions in scan order — waited on each other.
 * Each race is forced here, deterministically, with a third connection holding the contested
 * row until both transactions wait (pg_stat_activity), then letting go: PostgreSQL's lock
 * queue is first come, first served, so the order the gateway's transactions take their
 * locks alone decides whether they deadlock. Real PostgreSQL throughout.
 */
import t from 'tap'
import pg from 'pg'
import { StoreUnavailableError } from '../../src/sessions/errors.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

/** outcome of a promise, without throwing: 'ok' or the error */
const settle = (p: Promise<unknown>): Promise<unknown> => p.then(() => 'ok', (err: unknown) => err)

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('store_races')
  // lock waits here last as long as the test holds a row: no lock_timeout may end them first
  const store = await openStore({ url, lockTimeoutMs: 0, statementTimeoutMs: 0 })
  t.teardown(() => store.close())
  const clock = makeClock()
  const svc = new SessionService({ store, clock, signAccessToken: makeTestSigner(clock).sign })
  const alice = await addUser(store, { name: 'alice', password: 'pw-alice' }, clock())

  /** a connection that holds row locks until told to let go */
  const holder = async (t: { teardown: (fn: () => unknown) => void }): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    t.teardown(() => c.end())
    return c
  }
  /** until `n` backends of this database wait on a lock (bounded) */
  const waiting = async (watch: pg.Client, n: number): Promise<void> => {
    const deadline = Date.now() + PROCESS_WAIT_MS
    for (;;) {
      const { rows } = await watch.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
      if ((rows[0] as { n: number }).n >= n) return
      if (Date.now() > deadline) throw new Error(`fewer than ${n} lock waits after ${PROCESS_WAIT_MS} ms`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  /**
   * The race: a third connection holds the row `lock` names; `first` starts and waits on it,
   * then `second` does; the row is let go and both outcomes are returned (lock waits are
   * granted first come, first served, so only the order each transaction takes its locks
   * decides whether they deadlock)
   */
  const contend = async (t: { teardown: (fn: () => unknown) => void }, lock: readonly [string, unknown[]], first: () => Promise<unknown>, second: () => Promise<unknown>): Promise<unknown[]> => {
    const hold = await holder(t)
    const watch = await holder(t)
    await hold.query('BEGIN')
    await hold.query(lock[0], lock[1])
    const one = settle(first())
    await waiting(watch, 1)
    const other = settle(second())
    await waiting(watch, 2)
    await hold.query('ROLLBACK')
    return await Promise.all([one, other])
  }

  t.test('a successful login and another login\'s admission take the throttle rows in one order', async (t) => {
    const ip = '203.0.113.7'
    const at = new Date(clock())
    const forget = new Date(clock() + 3_600_000)
    // the address's row first (everyone behind one NAT shares it, so it is usually older)
    await store.transaction(async (tx) => { await tx.lockThrottleRows([{ kind: 'ip', key: ip }], at, forget) })
    await store.transaction(async (tx) => { await tx.lockThrottleRows([{ kind: 'account', key: 'alice' }], at, forget) })

    const [a, s] = await contend(t, ["SELECT 1 FROM login_attempts WHERE kind = 'account' AND key = 'alice' FOR UPDATE", []],
      // an admission (throttle.ts: kind order, account first) waits on the account row
      () => store.transaction(async (tx) => {
        await tx.lockThrottleRows([{ kind: 'account', key: 'alice' }], at, forget)
        await tx.lockThrottleRows([{ kind: 'ip', key: ip }], at, forget)
      }),
      // a login that succeeded records it: before the fix it took the address's row, then waited
      () => store.transaction(async (tx) => { await tx.recordLoginSuccess('alice', ip, at) }))
    t.equal(a, 'ok', 'the admission completes')
    t.equal(s, 'ok', 'the login\'s success completes (before: one of the two was a deadlock victim, a 500)')
  })

  t.test('two logouts naming the same two sessions the other way round', async (t) => {
    const [p, q] = [await svc.login('alice', 'pw-alice'), await svc.login('alice', 'pw-alice')]
    const [first, second] = p.sid < q.sid ? [p, q] : [q, p]
    // one names `first` by its refresh token, `second` by its access token's sid; the other the reverse
    const outcomes = await contend(t, ['SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE', [first.sid]],
      () => svc.logout(first.refreshToken, { sub: alice.id, sid: second.sid }),
      () => svc.logout(second.refreshToken, { sub: alice.id, sid: first.sid }))
    t.same(outcomes, ['ok', 'ok'], 'both logouts complete (before: a deadlock, a 500)')
    for (const s of [first, second]) t.ok((await store.getSession(s.sid))?.revokedAt, `session ${s.sid.slice(0, 6)}… is revoked`)
  })

  t.test('a logout naming two sessions beside "log out everywhere"', async (t) => {
    const bob = await addUser(store, { name: 'bob', password: 'pw-bob' }, clock())
    // c before d: "everywhere" used to lock them in the table's order
    const c = await svc.login('bob', 'pw-bob')
    const d = await svc.login('bob', 'pw-bob')
    const outcomes = await contend(t, ['SELECT 1 FROM sessions WHERE id = $1 FOR UPDATE', [c.sid]],
      () => svc.logoutAll(bob.id),
      // d's refresh token and c's access token: before the fix d, then c
      () => svc.logout(d.refreshToken, { sub: bob.id, sid: c.sid }))
    t.same(outcomes, ['ok', 'ok'], 'both complete (before: a deadlock, a 500)')
  })

  // last: it makes the whole cluster read-only for a moment
  t.test('a store that answers but refuses writes is 503 store_unavailable, not a 500', async (t) => {
    const p = await svc.login('alice', 'pw-alice')
    const admin = await holder(t)
    const readOnly = async (on: boolean): Promise<void> => {
      await admin.query(on ? 'ALTER SYSTEM SET default_transaction_read_only = on' : 'ALTER SYSTEM RESET default_transaction_read_only')
      await admin.query('SELECT pg_reload_conf()')
      // every backend rereads its configuration when it next waits for a command: a new
      // connection shows when the reload has been signalled
      const deadline = Date.now() + PROCESS_WAIT_MS
      for (;;) {
        const probe = new pg.Client({ connectionString: url })
        await probe.connect()
        const { rows } = await probe.query('SHOW default_transaction_read_only')
        await probe.end()
        if ((rows[0] as { default_transaction_read_only: string }).default_transaction_read_only === (on ? 'on' : 'off')) return
        if (Date.now() > deadline) throw new Error('the configuration reload was not seen')
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
    await readOnly(true)
    t.teardown(() => readOnly(false))
    const outcomes = {
      login: await settle(svc.login('alice', 'pw-alice')),
      refresh: await settle(svc.refresh(p.refreshToken)),
      logout: await settle(svc.logout(p.refreshToken, undefined)),
    }
    for (const [name, outcome] of Object.entries(outcomes)) {
      t.type(outcome, StoreUnavailableError, `${name}: store unavailable (before: the driver's error, a 500)`)
      t.match(outcome, { code: 'store_unavailable', statusCode: 503, retryAfterSec: 5 }, `${name}: 503 with Retry-After`)
      t.match((outcome as Error).cause, { code: '25006' }, `${name}: the cause is PostgreSQL's read_only_sql_transaction`)
    }
    await readOnly(false)
    t.ok((await svc.refresh(p.refreshToken)).accessToken, 'writable again: the same refresh token works (the refused attempts changed nothing)')
  })
}
