import t from 'tap'
import {
  migrate, sessionsList, sessionsRevoke, usersAdd, usersDisable, usersEnable, usersList, usersPasswd, usersSetClaims, usersSetScopes,
} from '../../src/sessions/admin-commands.js'
import { InvalidCredentialsError, SessionNotFoundError, UserNotFoundError } from '../../src/sessions/errors.js'
import { SessionService } from '../../src/sessions/service.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

// one backend is enough for thin wrappers: PostgreSQL when present (faster to start)
const b = backends(t)
const backend = b.names[0] ?? 'embedded'

t.test(`admin commands (${backend})`, async (t) => {
  const store = await b.open(backend, t)
  const clock = makeClock()
  const opts = { clock }
  const signer = makeTestSigner(clock, 300)
  const svc = new SessionService({ store, clock, signAccessToken: signer.sign, options: { accessTokenTtlSec: 300 } })

  const added = await usersAdd(store, { name: 'alice', password: 'pw1', scopes: ['orders:read'], claims: { tenant: 't1' } }, opts)
  t.notOk('passwordHash' in added, 'no hash in command output')
  t.match(added, { name: 'alice', scopes: ['orders:read'], claims: { tenant: 't1' }, disabled: false })
  await usersAdd(store, { name: 'bob', password: 'pw2' }, opts)
  const list = await usersList(store)
  t.same(list.map((u) => u.name), ['alice', 'bob'])
  t.notOk(list.some((u) => 'passwordHash' in u))

  t.same((await usersSetScopes(store, 'alice', ['a', 'b'], opts)).scopes, ['a', 'b'])
  t.same((await usersSetClaims(store, 'alice', { roles: ['x'] }, opts)).claims, { roles: ['x'] })

  const s1 = await svc.login('alice', 'pw1', { ip: '192.0.2.1', userAgent: 'cli-test' })
  const s2 = await svc.login('alice', 'pw1')
  const sessions = await sessionsList(store, 'alice', opts)
  t.equal(sessions.length, 2)
  t.match(sessions.find((s) => s.sid === s1.sid), { ip: '192.0.2.1', userAgent: 'cli-test', active: true })
  await t.rejects(sessionsList(store, 'nobody'), UserNotFoundError)

  t.same(await sessionsRevoke(store, { session: s1.sid }, opts), [s1.sid])
  t.same(await sessionsRevoke(store, { session: s1.sid }, opts), [], 'already revoked')
  await t.rejects(sessionsRevoke(store, { session: 'nope' }, opts), SessionNotFoundError)
  await t.rejects(svc.refresh(s1.refreshToken), { code: 'invalid_grant' })
  t.ok(await svc.refresh(s2.refreshToken), 'the other session lives')
  const rev = await store.loadRevocations(new Date(clock()))
  t.ok(rev.find((e) => e.kind === 'session' && e.value === s1.sid && e.expiresAtSec === Math.floor(clock() / 1000) + 3600 + 300),
    'entry sized by the longest token lifetime and skew any configuration allows, not a TTL')

  t.same(await sessionsRevoke(store, { user: 'alice' }, opts), [s2.sid])
  await t.rejects(sessionsRevoke(store, { user: 'nobody' }, opts), UserNotFoundError)

  await usersPasswd(store, 'bob', 'new-pw', opts)
  await t.rejects(svc.login('bob', 'pw2'), InvalidCredentialsError)
  t.ok(await svc.login('bob', 'new-pw'))

  t.equal((await usersDisable(store, 'bob', opts)).disabled, true)
  await t.rejects(svc.login('bob', 'new-pw'), InvalidCredentialsError)
  t.equal((await usersEnable(store, 'bob', opts)).disabled, false)
  t.ok(await svc.login('bob', 'new-pw'))
  await t.rejects(usersDisable(store, 'nobody', opts), UserNotFoundError)
})

t.test('migrate command', { skip: backend === 'postgres' ? false : 'needs PostgreSQL (an embedded run is covered by embedded.test.ts)' }, async (t) => {
  const url = await (await b.cluster()).createDatabase('migrate_cmd')
  t.same(await migrate({ url }), [1, 2, 3, 4])
  t.same(await migrate({ url }), [])
})
