/**
 * The embedded store on disk: persistence across reopen, migrations recorded, the
 * revocation feed over in-process LISTEN/NOTIFY, and errors after close.
 */
import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Denylist } from '../../src/pipeline/denylist.js'
import { StoreUnavailableError } from '../../src/sessions/errors.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const dir = await mkdtemp(join(tmpdir(), 'portcullis-embedded-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })
const dataDir = join(dir, 'data')

t.test('create, use, close, reopen', async (t) => {
  let t0 = performance.now()
  const store = await openStore({ dataDir })
  t.comment(`first open (create + migrate): ${(performance.now() - t0).toFixed(0)} ms, rss ${(process.memoryUsage().rss / 2 ** 20).toFixed(0)} MiB`)
  t.equal(store.kind, 'embedded')
  const clock = Date.now
  const signer = makeTestSigner(clock)
  const svc = new SessionService({ store, clock, signAccessToken: signer.sign })
  await addUser(store, { name: 'alice', password: 'pw', scopes: ['s'] }, clock())

  const deny = new Denylist()
  const feed = new RevocationFeed({ store, denylist: deny })
  await feed.start()
  t.ok(feed.ready)
  const p = await svc.login('alice', 'pw')
  await svc.logout(p.refreshToken, signer.verify(p.accessToken))
  // in-process NOTIFY is delivered on commit, asynchronously
  for (let i = 0; i < 100 && deny.check({ sid: p.sid }) === undefined; i++) await new Promise((resolve) => setTimeout(resolve, 10))
  t.equal(deny.check({ sid: p.sid }), 'session_revoked', 'feed works over PGlite listen')
  await feed.close()
  await store.close()
  await t.rejects(store.findUserByName('alice'), StoreUnavailableError, 'closed store reports unavailable')
  await t.rejects(store.transaction(async () => {}), StoreUnavailableError)

  t0 = performance.now()
  const again = await openStore({ dataDir })
  t.comment(`reopen: ${(performance.now() - t0).toFixed(0)} ms`)
  t.teardown(async () => { await again.close() })
  t.same(await again.migrate(), [], 'migrations already recorded on disk')
  t.same((await again.findUserByName('alice'))?.scopes, ['s'], 'user persisted')
  const deny2 = new Denylist()
  const feed2 = new RevocationFeed({ store: again, denylist: deny2 })
  await feed2.start()
  t.equal(deny2.check({ sid: p.sid }), 'session_revoked', 'revocations persisted and reloaded')
  await feed2.close()
  const svc2 = new SessionService({ store: again, clock, signAccessToken: signer.sign })
  await t.rejects(svc2.refresh(p.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
})
