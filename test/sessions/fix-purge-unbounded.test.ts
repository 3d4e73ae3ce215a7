/**
 * fix-purge-unbounded (found beside fix-feed-catchup-unbounded, 2026-12-05): the purge of what
 * can no longer matter — expired sessions, refresh tokens and revocations, sealed successors past
 * their grace — was one statement per table, each growing with what had piled up. Past the pool's
 * statement_timeout (5 s by default) it failed every time, so the rows piled up further (a mass
 * logout, a long outage, a fleet that was down) and every revocation load stepped over them. It
 * now works in batches of PURGE_BATCH_ROWS, one statement each.
 *
 * Checked without timing, on the real drivers (PostgreSQL 15, and PGlite, which shares the SQL):
 * the driver's query() is wrapped to record how many rows each statement touched (observation,
 * nothing answered in the driver's place); everything expired goes, everything live stays.
 * PURGE_BATCH_ROWS is written out, so this file also runs (and fails) against the code before.
 */
import t from 'tap'
import { createEmbeddedDriver } from '../../src/sessions/embedded-store.js'
import { createPgDriver } from '../../src/sessions/pg-store.js'
import * as sqlStore from '../../src/sessions/sql-store.js'
import type { Row, SqlDriver } from '../../src/sessions/sql-store.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'

/** PURGE_BATCH_ROWS in sql-store.ts */
const BATCH_ROWS = 10_000
const NOW_SEC = Date.UTC(2026, 11, 5, 12, 0, 0) / 1000
/** more than two batches of each kind */
const EXPIRED = 25_000
const LIVE = 500

function recording (driver: SqlDriver, log: Array<{ text: string, rows: Row[] }>): SqlDriver {
  return {
    ...driver,
    query: async (text: string, params?: unknown[]): Promise<Row[]> => {
      const rows = await driver.query(text, params)
      log.push({ text, rows })
      return rows
    },
  }
}

const backends: Array<{ name: string, open: () => Promise<SqlDriver> }> = [
  { name: 'embedded (PGlite)', open: async () => await createEmbeddedDriver({ dataDir: 'memory://' }) },
]
const avail = pgAvailability()
if (avail.available) {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('purge')
  backends.unshift({ name: 'postgres', open: async () => createPgDriver({ url, statementTimeoutMs: 5_000 }) })
} else {
  t.comment(avail.reason)
}

t.test('the batch size is the source\'s', async (t) => {
  t.equal((sqlStore as Record<string, unknown>).PURGE_BATCH_ROWS, BATCH_ROWS, 'PURGE_BATCH_ROWS')
})

for (const backend of backends) {
  t.test(`a purge of what piled up, on ${backend.name}`, async (t) => {
    const driver = await backend.open()
    const log: Array<{ text: string, rows: Row[] }> = []
    const store = new sqlStore.SqlStore(recording(driver, log))
    t.teardown(async () => { await store.close() })
    await store.migrate()
    const at = (offsetSec: number): string => `to_timestamp(${NOW_SEC + offsetSec})`
    await driver.query(`INSERT INTO users (id, name, password_hash, created_at, updated_at) VALUES ('u1', 'alice', 'x', ${at(-86_400)}, ${at(-86_400)})`)
    // sessions: expired ones, live ones, and live ones whose sealed successor's grace is over
    await driver.query(
      `INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, refresh_prev_sealed, refresh_prev_sealed_until)
       SELECT 's' || g, 'u1', ${at(-86_400)}, ${at(-3_600)},
              CASE WHEN g <= $1::int THEN ${at(-60)} ELSE ${at(86_400)} END,
              CASE WHEN g > $1::int + $2::int THEN 'sealed' END, CASE WHEN g > $1::int + $2::int THEN ${at(-30)} END
         FROM generate_series(1, $1::int + $2::int + $3::int) g`, [EXPIRED, LIVE, EXPIRED])
    await driver.query(
      `INSERT INTO revocations (kind, value, expires_at, created_at)
       SELECT 'jti', 'v' || g, CASE WHEN g <= $1::int THEN ${at(-60)} ELSE ${at(600)} END, ${at(-600)}
         FROM generate_series(1, $1::int + $2::int) g`, [EXPIRED, LIVE])
    log.length = 0

    const result = await store.purgeExpired(new Date(NOW_SEC * 1000), { reuseGraceSec: 10 })
    t.same({ sessions: result.sessions, revocations: result.revocations, sealedSuccessors: result.sealedSuccessors },
      { sessions: EXPIRED, revocations: EXPIRED, sealedSuccessors: EXPIRED }, 'everything expired went, and is counted')
    const left = await driver.query(`SELECT
        (SELECT count(*)::int FROM sessions) AS sessions,
        (SELECT count(*)::int FROM sessions WHERE refresh_prev_sealed IS NOT NULL) AS sealed,
        (SELECT count(*)::int FROM revocations) AS revocations`)
    t.same(left[0], { sessions: LIVE + EXPIRED, sealed: 0, revocations: LIVE }, 'everything live stayed')
    const most = Math.max(...log.map((r) => r.rows.length))
    t.comment(`${log.length} statements, at most ${most} rows each`)
    t.ok(most <= BATCH_ROWS, `no statement touched more than ${BATCH_ROWS} rows (most: ${most})`)
  })
}
