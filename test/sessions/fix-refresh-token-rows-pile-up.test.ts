/**
 * Regression (issue 9 item 8): every rotation kept the spent refresh-token row, with its
 * sealed successor, for 14 days — about 2,000 rows per active session. Now a session's
 * refresh state lives on its own row (current and previous token hash); a spent token of
 * any age is still recognised by its family tag, so reuse detection is kept with O(1)
 * rows per session. The sealed successor is dropped once the grace window is over.
 * Legacy tokens (migration 1) keep working until they expire and move their session to
 * the new format at their next rotation.
 */
import t from 'tap'
import { DEFAULT_REUSE_GRACE_SEC } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { MIGRATIONS } from '../../src/sessions/migrations.js'
import { hashRefreshToken, newLegacyRefreshToken } from '../../src/sessions/refresh-tokens.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const ROTATIONS = 1_000
const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

/** rows a session costs in the database: its own row and its refresh_tokens rows */
async function rowsOf (store: Store, sid: string): Promise<{ sessions: number, refreshTokens: number }> {
  const session = await store.getSession(sid)
  let refreshTokens = 0
  // every token the session ever had: one row each before the fix
  for (const h of knownHashes.get(sid) ?? []) if (await store.getRefreshToken(h) !== undefined) refreshTokens++
  return { sessions: session === undefined ? 0 : 1, refreshTokens }
}
const knownHashes = new Map<string, string[]>()

for (const backend of ['postgres', 'embedded'] as const) {
  t.test(backend, { skip: b.names.includes(backend) ? false : b.skipped }, async (t) => {
    const store = await b.open(backend, t)
    const clock = makeClock()
    const svc = new SessionService({ store, clock, signAccessToken: makeTestSigner(clock).sign, options: { reuseGraceSec: 10 } })
    await addUser(store, { name: 'alice', password: 'pw' }, clock())

    t.test(`${ROTATIONS} rotations leave O(1) rows, and the first token is still recognised as reuse`, async (t) => {
      const first = await svc.login('alice', 'pw')
      const hashes = [hashRefreshToken(first.refreshToken)]
      knownHashes.set(first.sid, hashes)
      let current = first.refreshToken
      const t0 = performance.now()
      for (let i = 0; i < ROTATIONS; i++) {
        clock.advanceSec(60)
        current = (await svc.refresh(current)).refreshToken
        hashes.push(hashRefreshToken(current))
      }
      t.comment(`${ROTATIONS} rotations in ${(performance.now() - t0).toFixed(0)} ms on ${backend}`)
      t.same(await rowsOf(store, first.sid), { sessions: 1, refreshTokens: 0 }, 'one session row, no row per rotation (was 1,001)')
      clock.advanceSec(DEFAULT_REUSE_GRACE_SEC + 1)
      await svc.purgeExpired()
      t.equal((await store.getSessionRefresh(first.sid))?.prevSealed, null, 'the sealed successor is gone once the grace window is over')
      // the token of the first rotation, 1,000 rotations and ~17 hours later
      await t.rejects(svc.refresh(first.refreshToken), { code: 'invalid_grant', reason: 'reuse_detected' }, 'an old spent token still revokes the family')
      await t.rejects(svc.refresh(current), { code: 'invalid_grant', reason: 'session_revoked' }, 'the live token dies with it')
    })

    t.test('the grace window still hands a racing tab the same successor', async (t) => {
      const p1 = await svc.login('alice', 'pw')
      const p2 = await svc.refresh(p1.refreshToken)
      clock.advanceSec(5)
      t.equal((await svc.refresh(p1.refreshToken)).refreshToken, p2.refreshToken)
      clock.advanceSec(6)
      await svc.purgeExpired()
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'reuse_detected' }, 'after the window: reuse')
    })
  })
}

t.test('legacy tokens (migration 1 rows) keep working and move to the session format', { skip: b.names.includes('postgres') ? false : b.skipped }, async (t) => {
  const url = await (await b.cluster()).createDatabase('legacy_tokens')
  const { default: pg } = await import('pg')
  const db = new pg.Client({ connectionString: url })
  await db.connect()
  t.teardown(() => db.end())
  // a database as the previous release left it: migration 1 only, a user, a session and
  // its live refresh token, one row per token
  await db.query('CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
  await db.query(MIGRATIONS[0]!.sql)
  await db.query('INSERT INTO schema_migrations (version, name) VALUES (1, $1)', [MIGRATIONS[0]!.name])
  const clock = makeClock()
  const now = new Date(clock())
  const legacy = newLegacyRefreshToken()
  const spentLegacy = newLegacyRefreshToken()
  await db.query('INSERT INTO users (id, name, password_hash, created_at, updated_at) VALUES (\'u1\', \'old\', \'x\', $1, $1)', [now])
  await db.query('INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at) VALUES (\'legacysession000000000\', \'u1\', $1, $1, $2)',
    [now, new Date(clock() + 30 * 86400_000)])
  await db.query(`INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at, spent_at, successor_hash)
                  VALUES ($1, 'legacysession000000000', $2, $3, $2, $4)`, [hashRefreshToken(spentLegacy), now, new Date(clock() + 14 * 86400_000), hashRefreshToken(legacy)])
  await db.query('INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, \'legacysession000000000\', $2, $3)',
    [hashRefreshToken(legacy), now, new Date(clock() + 14 * 86400_000)])

  const store = await openStore({ url }) // applies migration 2 on the data
  t.teardown(() => store.close())
  const svc = new SessionService({ store, clock, signAccessToken: makeTestSigner(clock).sign })
  clock.advanceSec(60)
  const p = await svc.refresh(legacy)
  t.equal(p.sid, 'legacysession000000000')
  t.match(p.refreshToken, /^legacysession000000000\.[A-Za-z0-9_-]{64}$/, 'the successor is a session-format token')
  clock.advanceSec(3)
  t.equal((await svc.refresh(legacy)).refreshToken, p.refreshToken, 'a racing tab with the legacy token gets the same successor')
  const p2 = await svc.refresh(p.refreshToken)
  t.ok(p2.accessToken, 'the session format works from then on')
  clock.advanceSec(60)
  await t.rejects(svc.refresh(spentLegacy), { code: 'invalid_grant', reason: 'reuse_detected' }, 'a spent legacy token is still reuse')
  await t.rejects(svc.refresh(p2.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
})
