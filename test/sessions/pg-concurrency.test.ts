/**
 * What only a real PostgreSQL can show: two replicas (two pools) racing on migrations
 * and on the refresh of one token.
 */
import t from 'tap'
import pg from 'pg'
import { hashRefreshToken } from '../../src/sessions/refresh-tokens.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)

  const open = async (url: string, migrate = true): Promise<Store> => {
    const store = await openStore({ url, migrate })
    t.teardown(async () => { await store.close() })
    return store
  }

  t.test('two replicas opening at once apply each migration exactly once', async (t) => {
    const url = await cluster.createDatabase('migrate_race')
    const [a, b] = await Promise.all([open(url, false), open(url, false)])
    const applied = await Promise.all([a.migrate(), b.migrate(), a.migrate()])
    t.same(applied.flat().sort(), [1, 2, 3, 4], 'each version applied once across replicas')
    const url2 = await cluster.createDatabase('open_race')
    const stores = await Promise.all([open(url2), open(url2), open(url2)])
    t.equal(stores.length, 3, 'three concurrent openStore() calls with migrations succeed')
    const c = new pg.Client({ connectionString: url2 })
    await c.connect()
    const { rows } = await c.query('SELECT version FROM schema_migrations ORDER BY version')
    await c.end()
    t.same(rows, [{ version: 1 }, { version: 2 }, { version: 3 }, { version: 4 }])
  })

  t.test('concurrent refresh of one token on two pools leaves exactly one live successor', async (t) => {
    const url = await cluster.createDatabase('refresh_race')
    const [storeA, storeB] = await Promise.all([open(url), open(url)])
    const clock = makeClock()
    const signer = makeTestSigner(clock)
    await addUser(storeA, { name: 'alice', password: 'pw' }, clock())
    const svcA = new SessionService({ store: storeA, clock, signAccessToken: signer.sign })
    const svcB = new SessionService({ store: storeB, clock, signAccessToken: signer.sign })
    const check = new pg.Client({ connectionString: url })
    await check.connect()
    t.teardown(async () => { await check.end() })

    for (let i = 0; i < 15; i++) {
      const p = await svcA.login('alice', 'pw')
      const results = await Promise.allSettled([svcA.refresh(p.refreshToken), svcB.refresh(p.refreshToken), svcB.refresh(p.refreshToken)])
      const ok = results.filter((r) => r.status === 'fulfilled')
      // within the grace window every racer gets the same successor
      t.equal(ok.length, 3, `round ${i}: all racers answered`)
      const tokens = new Set(ok.map((r) => r.value.refreshToken))
      t.equal(tokens.size, 1, `round ${i}: one successor handed out`)
      const { rows } = await check.query('SELECT refresh_hash, refresh_prev_hash FROM sessions WHERE id = $1', [p.sid])
      t.equal(rows[0].refresh_hash, hashRefreshToken([...tokens][0]!), `round ${i}: the one successor is the live token`)
      t.equal(rows[0].refresh_prev_hash, hashRefreshToken(p.refreshToken), `round ${i}: the original is the previous one`)
      const { rows: all } = await check.query('SELECT count(*)::int AS n FROM refresh_tokens WHERE session_id = $1', [p.sid])
      t.equal(all[0].n, 0, `round ${i}: no row per rotation`)
    }
  })
}
