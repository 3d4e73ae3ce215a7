/**
 * fix-user-name-key: the login throttle counts an account's attempts under the name's key
 * (NFKC, then lower case), and stop 19 refused a new user whose name differs from another
 * only in letter case — but the refusal compared SQL `lower()` of the names, which does no
 * NFKC and, under the C locale (PGlite's), folds only ASCII. So `ａｌｉｃｅ` (fullwidth) could
 * be created beside `alice` and shared her throttle counter: its owner's successful logins
 * reset hers, unlimited guesses on `alice` (fix-auth-review's attack, by another spelling).
 * And the check and the insert were one statement under READ COMMITTED: two creations at
 * once of `race` and `Race` could both pass it.
 *
 * Real stores: embedded PGlite and a real PostgreSQL (two pools, as two replicas).
 */
import t from 'tap'
import pg from 'pg'
import { UserExistsError } from '../../src/sessions/errors.js'
import { openStore, type Store } from '../../src/sessions/store.js'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import { backends } from '../fixtures/sessions-backends.js'

const b = backends(t)
const HASH = '$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g'
let n = 0
const create = async (store: Store, name: string): Promise<unknown> =>
  await store.createUser({ id: `u-${process.pid}-${++n}`, name, passwordHash: HASH, scopes: [], claims: {} }, new Date())

for (const backend of b.names) {
  t.test(`a name whose key is taken is refused (${backend})`, async (t) => {
    const store = await b.open(backend, t)
    await create(store, 'alice')
    await create(store, 'Émile')
    // the attack's premise: these share alice's throttle counter
    for (const name of ['ａｌｉｃｅ', 'ＡＬＩＣＥ', 'Alice', 'ALICE']) {
      t.equal(LoginThrottle.accountKey(name), LoginThrottle.accountKey('alice'), `${name} shares alice's throttle key`)
      await t.rejects(create(store, name), { code: 'user_exists', statusCode: 409, message: /only in letter case or Unicode form/ }, `${name} refused`)
    }
    // non-ASCII letter case: SQL lower() under the C locale leaves É alone
    await t.rejects(create(store, 'émile'), { code: 'user_exists', message: /only in letter case or Unicode form/ }, 'émile refused beside Émile')
    await t.rejects(create(store, 'E\u0301mile'), { code: 'user_exists' }, 'É decomposed (NFKC composes it) refused')
    await t.rejects(create(store, 'alice'), { code: 'user_exists', message: /^user "alice" already exists$/ }, 'the same name: plain "exists"')
    t.same((await store.listUsers()).map((u) => u.name).sort(), ['alice', 'Émile'], 'no user was added')
    const other = await create(store, 'alicia')
    t.ok(other, 'a different name is still created')
  })
}

t.test('two replicas creating variants of one name at once: exactly one is created (postgres)', { skip: b.names.includes('postgres') ? false : b.skipped }, async (t) => {
  const url = await (await b.cluster()).createDatabase(`name_race_${process.pid}`)
  const replicas = await Promise.all([openStore({ url }), openStore({ url })])
  t.teardown(async () => { await Promise.all(replicas.map(async (s) => { await s.close() })) })
  const fullwidth = (s: string): string => [...s].map((c) => String.fromCodePoint(c.codePointAt(0)! - 0x21 + 0xFF01)).join('')
  const variants = (base: string): string[] => [base, base.toUpperCase(), base[0]!.toUpperCase() + base.slice(1),
    fullwidth(base), fullwidth(base.toUpperCase()), base.slice(0, -1) + base.slice(-1).toUpperCase()]
  for (const base of ['race', 'rally', 'radar', 'rapid', 'raven']) {
    const names = variants(base)
    const results = await Promise.allSettled(names.map(async (name, i) => await create(replicas[i % 2]!, name)))
    const created = results.filter((r) => r.status === 'fulfilled').length
    const refused = results.filter((r) => r.status === 'rejected' && r.reason instanceof UserExistsError).length
    t.equal(created, 1, `${base}: one of ${names.length} created`)
    t.equal(refused, names.length - 1, `${base}: the others refused with user_exists`)
  }
})

t.test('rows written before the key existed get it before a name is checked (postgres)', { skip: b.names.includes('postgres') ? false : b.skipped }, async (t) => {
  const url = await (await b.cluster()).createDatabase(`name_legacy_${process.pid}`)
  const store = await openStore({ url })
  t.teardown(async () => { await store.close() })
  // a row as migration 2's schema (or an older replica) writes it: no name_key
  const c = new pg.Client({ connectionString: url })
  await c.connect()
  t.teardown(async () => { await c.end() })
  await c.query(`INSERT INTO users (id, name, password_hash, scopes, claims, disabled, created_at, updated_at)
    VALUES ('legacy-1', 'bob', $1, '{}', '{}', false, now(), now())`, [HASH])
  await t.rejects(create(store, 'ｂｏｂ'), { code: 'user_exists' }, 'ｂｏｂ refused beside a legacy bob')
  const { rows } = await c.query('SELECT name_key FROM users WHERE id = $1', ['legacy-1'])
  t.equal(rows[0].name_key, LoginThrottle.accountKey('bob'), 'the legacy row now carries its key')
})
