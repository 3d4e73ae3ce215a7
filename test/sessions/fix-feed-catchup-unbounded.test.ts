/**
 * Regression (revocation review, 2026-12-05): the revocation feed's catch-up was one statement,
 * `SELECT … FROM revocations WHERE expires_at > $1 ORDER BY id`, whose cost grew with the
 * table. The pool's connections carry statement_timeout (5 s by default) and a read timeout
 * 2 s above it; with 3 M live rows every load was cut off, so a new replica never became
 * ready and a running one whose LISTEN connection blipped reconnected for ever while revoked
 * tokens passed.
 *
 * loadRevocations now reads keyset pages along the primary key, at most PAGE_ROWS rows per
 * statement. Checked without timing: the store runs on the real drivers (PostgreSQL 15, and
 * PGlite, which shares the SQL), and the test wraps the driver's query() to record how many
 * rows each statement returned — observation, nothing is answered in the driver's place.
 * - loads (table-driven): the same entries as a direct query, in id order, and no statement
 *   over PAGE_ROWS rows, whatever the table: empty, one page exactly, 2.5 pages with expired
 *   rows interleaved and ids with gaps;
 * - the feed on PostgreSQL starts on a table 2.5 pages long and applies everything, including
 *   two revocations committed while it pages: one drawn its id before the load and committed
 *   only after the first page had passed that id (no page can see it: only its notification
 *   brings it), one inserted mid-way with a higher id.
 *
 * PAGE_ROWS is written out instead of imported, so that this file also runs (and fails)
 * against the code before the fix; one assertion ties it to the source's constant.
 */
import t from 'tap'
import { createHash } from 'node:crypto'
import pg from 'pg'
import { Denylist } from '../../src/pipeline/denylist.js'
import type { RevocationEntry } from '../../src/pipeline/denylist.js'
import { createEmbeddedDriver } from '../../src/sessions/embedded-store.js'
import { createPgDriver } from '../../src/sessions/pg-store.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import * as sqlStore from '../../src/sessions/sql-store.js'
import type { Row, SqlDriver } from '../../src/sessions/sql-store.js'
import { REVOCATION_CHANNEL } from '../../src/sessions/store.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { until } from '../fixtures/until.js'

/** REVOCATION_LOAD_PAGE_ROWS in sql-store.ts */
const PAGE_ROWS = 20_000
/** the pool's statement_timeout in production (the CLI default), as the store runs there */
const STATEMENT_TIMEOUT_MS = 5_000
/** the test's clock: every expiry is relative to it, so nothing depends on the wall clock */
const NOW_MS = Date.UTC(2026, 11, 5, 12, 0, 0)
const NOW_SEC = NOW_MS / 1000

interface Recorded { text: string, rows: Row[] }

/**
 * The driver as it is, with each statement recorded with the rows it returned; `after` runs
 * once a statement has returned, before its caller sees the rows.
 */
function recording (driver: SqlDriver, log: Recorded[], after?: (r: Recorded) => Promise<void>): SqlDriver {
  return {
    ...driver,
    query: async (text: string, params?: unknown[]): Promise<Row[]> => {
      const rows = await driver.query(text, params)
      const r = { text, rows }
      log.push(r)
      await after?.(r)
      return rows
    },
  }
}

/** the statements that read revocations (the load's), and the most rows one of them returned */
function reads (log: Recorded[]): { statements: number, mostRows: number } {
  const selects = log.filter((r) => /^\s*SELECT\b[\s\S]*\bFROM revocations\b/i.test(r.text))
  return { statements: selects.length, mostRows: Math.max(0, ...selects.map((r) => r.rows.length)) }
}

/**
 * `total` rows of all three kinds, every `expiredEvery`-th one expired (interleaved with the
 * live ones), then every row whose id is a multiple of `gapEvery` deleted (ids with gaps, as
 * purges and rolled-back inserts leave them).
 */
function fillSql (total: number, expiredEvery: number, gapEvery: number): { sql: string, params: unknown[] }[] {
  return [
    { sql: 'TRUNCATE revocations RESTART IDENTITY', params: [] },
    {
      sql: `INSERT INTO revocations (kind, value, expires_at, issued_before, created_at)
        SELECT (ARRAY['jti', 'session', 'user'])[g % 3 + 1], 'v' || g,
               to_timestamp(CASE WHEN $2 > 0 AND g % $2 = 0 THEN $1 - 60 - g % 50 ELSE $1 + 600 + g % 3600 END),
               CASE WHEN g % 3 = 2 THEN to_timestamp($1 - g % 100) END, to_timestamp($1)
          FROM generate_series(1, $3) g`,
      params: [NOW_SEC, expiredEvery, total],
    },
    ...(gapEvery > 0 ? [{ sql: 'DELETE FROM revocations WHERE id % $1 = 0', params: [gapEvery] }] : []),
  ]
}

/** an entry as a comparable line */
const line = (e: RevocationEntry): string => `${e.kind} ${e.value} ${e.expiresAtSec} ${e.issuedBeforeSec ?? '-'}`
const digest = (lines: string[]): string => createHash('sha256').update(lines.join('\n')).digest('hex')

interface Backend {
  name: string
  open: () => Promise<SqlDriver>
}

const avail = pgAvailability()
// PGlite's start (~4 s, mostly its in-process initdb) overlaps PostgreSQL's (child processes)
const embedded = createEmbeddedDriver({ dataDir: 'memory://' })
embedded.catch(() => {}) // awaited below; failing there, not as an unhandled rejection
const backends: Backend[] = [{ name: 'embedded (PGlite)', open: async () => await embedded }]
let pgUrl: string | undefined
if (avail.available) {
  const cluster = await startPostgres(t)
  pgUrl = await cluster.createDatabase('catchup')
  const url = pgUrl
  backends.unshift({ name: 'postgres', open: async () => createPgDriver({ url, statementTimeoutMs: STATEMENT_TIMEOUT_MS }) })
} else {
  t.comment(avail.reason)
}

t.test('the page size is the source\'s', async (t) => {
  t.equal((sqlStore as Record<string, unknown>).REVOCATION_LOAD_PAGE_ROWS, PAGE_ROWS, 'REVOCATION_LOAD_PAGE_ROWS')
})

const loads = [
  { name: 'an empty table', total: 0, expiredEvery: 0, gapEvery: 0, minLive: 0, maxLive: 0 },
  { name: 'exactly one page', total: PAGE_ROWS, expiredEvery: 0, gapEvery: 0, minLive: PAGE_ROWS, maxLive: PAGE_ROWS },
  // 70,000 rows, 1 in 6 expired, 1 in 7 ids deleted: 50,000 live, 2.5 pages
  { name: '2.5 pages, expired rows interleaved, ids with gaps', total: 70_000, expiredEvery: 6, gapEvery: 7, minLive: 2 * PAGE_ROWS + 1, maxLive: 3 * PAGE_ROWS - 1 },
]

for (const backend of backends) {
  t.test(`loads on ${backend.name}`, async (t) => {
    const log: Recorded[] = []
    const driver = await backend.open()
    const store = new sqlStore.SqlStore(recording(driver, log))
    t.teardown(async () => { await store.close() })
    await store.migrate()
    for (const c of loads) {
      t.test(c.name, async (t) => {
        for (const s of fillSql(c.total, c.expiredEvery, c.gapEvery)) await driver.query(s.sql, s.params)
        const expected = (await driver.query(
          `SELECT kind, value, extract(epoch FROM expires_at)::int AS exp, extract(epoch FROM issued_before)::int AS ib
             FROM revocations WHERE expires_at > $1 ORDER BY id`, [new Date(NOW_MS)]))
          .map((r) => `${String(r.kind)} ${String(r.value)} ${Number(r.exp)} ${r.ib === null ? '-' : Number(r.ib)}`)
        t.ok(expected.length >= c.minLive && expected.length <= c.maxLive, `the table holds what the case means (${expected.length} live rows)`)
        log.length = 0
        const entries = await store.loadRevocations(new Date(NOW_MS))
        const { statements, mostRows } = reads(log)
        t.comment(`${entries.length} entries in ${statements} statements, at most ${mostRows} rows each`)
        t.equal(entries.length, expected.length, 'every live row is loaded, no expired one')
        t.equal(digest(entries.map(line)), digest(expected), 'the same entries as one direct query, in id order')
        t.ok(mostRows <= PAGE_ROWS, `no statement returned more than ${PAGE_ROWS} rows (most: ${mostRows})`)
      })
    }
    t.test('a load its feed gave up on stops at its next page', async (t) => {
      // the feed aborts the load of an attempt past its deadline: it must not read the rest of
      // the table beside the attempt that replaces it
      for (const s of fillSql(70_000, 0, 0)) await driver.query(s.sql, s.params)
      const abandon = new AbortController()
      const pages: Recorded[] = []
      const watched = new sqlStore.SqlStore(recording(driver, pages, async (r) => { if (reads([r]).statements > 0) abandon.abort() }))
      const outcome = await watched.loadRevocations(new Date(NOW_MS), abandon.signal).then(() => 'loaded', (err: unknown) => (err as Error).name)
      t.equal(outcome, 'AbortError', 'the load rejects')
      t.equal(reads(pages).statements, 1, 'after the one page it was reading')
    })
  })
}

if (pgUrl !== undefined) {
  const url = pgUrl
  t.test('the feed starts on a table 2.5 pages long and misses nothing committed while it pages', async (t) => {
    const live = Math.round(2.5 * PAGE_ROWS)
    const nowSec = Math.floor(Date.now() / 1000) // the feed prunes by its own clock: real time here
    const late: RevocationEntry = { kind: 'jti', value: 'committed-late-low-id', expiresAtSec: nowSec + 600 }
    const midway: RevocationEntry = { kind: 'jti', value: 'inserted-midway', expiresAtSec: nowSec + 600 }

    const direct = new pg.Client({ connectionString: url })
    await direct.connect()
    t.teardown(async () => { await direct.end() })
    await direct.query('TRUNCATE revocations RESTART IDENTITY')
    // the late revocation draws its id first (the lowest), as insertRevocation writes it, and
    // its transaction stays open: its row and its notification exist only once it commits
    const lateTx = new pg.Client({ connectionString: url })
    await lateTx.connect()
    t.teardown(async () => { await lateTx.end() })
    await lateTx.query('BEGIN')
    const lateId = String((await lateTx.query(
      'INSERT INTO revocations (kind, value, expires_at, created_at) VALUES ($1, $2, to_timestamp($3), now()) RETURNING id',
      [late.kind, late.value, late.expiresAtSec])).rows[0].id)
    await lateTx.query('SELECT pg_notify($1, $2)', [REVOCATION_CHANNEL, sqlStore.revocationPayload(late)])
    await direct.query(
      `INSERT INTO revocations (kind, value, expires_at, created_at)
       SELECT 'jti', 'bulk-' || g, to_timestamp($1 + 600), now() FROM generate_series(1, $2) g`, [nowSec, live])

    const bulkFirstId = String((await direct.query("SELECT min(id) AS id FROM revocations WHERE value LIKE 'bulk-%'")).rows[0].id)

    // once the first page of the load is back (the cursor past lateId), both commit before the
    // next page is asked for
    const log: Recorded[] = []
    let committed = false
    const store = new sqlStore.SqlStore(recording(createPgDriver({ url, statementTimeoutMs: STATEMENT_TIMEOUT_MS }), log, async (r) => {
      if (committed || reads([r]).statements === 0) return
      committed = true
      await lateTx.query('COMMIT')
      await direct.query('BEGIN')
      await direct.query('INSERT INTO revocations (kind, value, expires_at, created_at) VALUES ($1, $2, to_timestamp($3), now())',
        [midway.kind, midway.value, midway.expiresAtSec])
      await direct.query('SELECT pg_notify($1, $2)', [REVOCATION_CHANNEL, sqlStore.revocationPayload(midway)])
      await direct.query('COMMIT')
    }))
    t.teardown(async () => { await store.close() })
    const deny = new Denylist()
    const feed = new RevocationFeed({ store, denylist: deny, reconnectMinDelayMs: 50, reconnectMaxDelayMs: 200 })
    t.teardown(async () => { await feed.close() })
    await feed.start()
    t.ok(feed.ready, 'the feed is ready')
    t.equal(feed.status.reloads, 1, 'after one load')
    t.ok(committed, 'the two committed after the first page')
    t.ok(BigInt(lateId) < BigInt(bulkFirstId), `the late row's id (${lateId}) is below every other (from ${bulkFirstId})`)
    t.notOk(log.some((r) => r.rows.some((row) => row.value === late.value)), 'no page read the late row: only its notification can bring it')
    await until('the late and the midway revocation', () =>
      deny.check({ jti: late.value }) === 'token_revoked' && deny.check({ jti: midway.value }) === 'token_revoked', 3000)
    t.pass('the revocation committed late under a low id arrived (its notification), and the one inserted midway')
    t.equal(deny.size, live + 2, 'every row is in the denylist')
    t.equal(deny.check({ jti: 'bulk-1' }), 'token_revoked', 'the first bulk row')
    t.equal(deny.check({ jti: `bulk-${live}` }), 'token_revoked', 'the last bulk row')
    const { statements, mostRows } = reads(log)
    t.comment(`the feed's load: ${statements} statements, at most ${mostRows} rows each`)
    t.ok(mostRows <= PAGE_ROWS, `no statement of the feed's load returned more than ${PAGE_ROWS} rows (most: ${mostRows})`)
  })
}
