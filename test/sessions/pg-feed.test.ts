/**
 * The revocation feed across replicas on a real PostgreSQL, and what happens when the
 * database goes away: store calls fail with StoreUnavailableError, the feed reconnects
 * and reloads everything, so revocations it could not hear are not lost.
 */
import t from 'tap'
import pg from 'pg'
import { Denylist } from '../../src/pipeline/denylist.js'
import { StoreUnavailableError } from '../../src/sessions/errors.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import { SessionService } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'
import { until } from '../fixtures/until.js'

const avail = pgAvailability()

if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('feed')
  const open = async (): Promise<Store> => {
    const store = await openStore({ url })
    t.teardown(async () => { await store.close() })
    return store
  }
  const storeA = await open()
  const storeB = await open()
  // real time here: the feed prunes by its clock, and PostgreSQL's own clock is irrelevant
  const clock = Date.now
  const signer = makeTestSigner(clock)
  const svcA = new SessionService({ store: storeA, clock, signAccessToken: signer.sign })
  await addUser(storeA, { name: 'alice', password: 'pw' }, clock())
  const alice = await storeA.findUserByName('alice')
  if (alice === undefined) throw new Error('no alice')

  // an entry that exists before any feed starts: must be loaded at start
  await svcA.revokeJti('jti-before-start', Math.floor(clock() / 1000) + 600)

  const denyA = new Denylist()
  const denyB = new Denylist()
  const feedA = new RevocationFeed({ store: storeA, denylist: denyA, reconnectMinDelayMs: 200, reconnectMaxDelayMs: 400 })
  const feedB = new RevocationFeed({ store: storeB, denylist: denyB, reconnectMinDelayMs: 200, reconnectMaxDelayMs: 400 })
  t.teardown(async () => { await feedA.close(); await feedB.close() })
  await Promise.all([feedA.start(), feedB.start()])

  t.test('start loads live entries', async (t) => {
    t.ok(feedB.ready)
    t.equal(feedB.status.reloads, 1)
    t.equal(denyB.check({ jti: 'jti-before-start' }), 'token_revoked')
    t.equal(denyB.check({ jti: 'other' }), undefined)
  })

  t.test('a revocation through one replica reaches the other within 1 s', async (t) => {
    const nowSec = Math.floor(clock() / 1000)
    await svcA.revokeJti('jti-live', nowSec + 600)
    const jtiMs = await until('jti on B', () => denyB.check({ jti: 'jti-live' }) === 'token_revoked', 1000)
    const p = await svcA.login('alice', 'pw')
    await svcA.logout(p.refreshToken, undefined)
    const sessionMs = await until('session on B', () => denyB.check({ sid: p.sid }) === 'session_revoked', 1000)
    await svcA.logoutAll(alice.id)
    const userMs = await until('user cut-off on B', () => denyB.check({ sub: alice.id, iat: nowSec - 1 }) === 'user_revoked', 1000)
    t.comment(`propagation: jti ${jtiMs.toFixed(0)} ms, session ${sessionMs.toFixed(0)} ms, user ${userMs.toFixed(0)} ms`)
    t.equal(denyB.check({ sub: alice.id, iat: nowSec + 3600 }), undefined, 'tokens issued after the cut-off pass')
    t.equal(denyA.check({ jti: 'jti-live' }), 'token_revoked', 'the writing replica hears it too')
  })

  t.test('a malformed notification is ignored, later ones still arrive', async (t) => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    await c.query("SELECT pg_notify('portcullis_revocations', 'not json')")
    await c.query("SELECT pg_notify('portcullis_revocations', '{\"kind\":\"bogus\",\"value\":\"x\",\"expiresAtSec\":1}')")
    await c.end()
    await svcA.revokeJti('jti-after-garbage', Math.floor(clock() / 1000) + 600)
    await until('jti after garbage', () => denyB.check({ jti: 'jti-after-garbage' }) === 'token_revoked', 1000)
    t.ok(feedB.ready)
  })

  t.test('a lost listen connection reloads entries that were never notified', async (t) => {
    const reloads = feedB.status.reloads
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    // in ONE transaction: write an entry without NOTIFY and kill the feeds' connections;
    // the row becomes visible at commit, before any feed can reconnect (≥ 100 ms)
    await admin.query('BEGIN')
    await admin.query(`INSERT INTO revocations (kind, value, expires_at, created_at)
                       VALUES ('jti', 'jti-silent', now() + interval '10 minutes', now())`)
    const { rows } = await admin.query(`SELECT pg_terminate_backend(pid) AS killed FROM pg_stat_activity
      WHERE application_name = 'portcullis-revocation-feed' AND datname = current_database()`)
    await admin.query('COMMIT')
    await admin.end()
    t.equal(rows.length, 2, 'both feed connections terminated')
    // never notified: B can only learn it from a reload (which may already have run on a loaded machine)
    t.ok(denyB.check({ jti: 'jti-silent' }) === undefined || feedB.status.reloads > reloads, 'not known before a reload')
    await until('feed B reloaded', () => feedB.ready && feedB.status.reloads > reloads, 5000)
    t.equal(denyB.check({ jti: 'jti-silent' }), 'token_revoked', 'found by the reload')
    t.equal(denyB.check({ jti: 'jti-live' }), 'token_revoked', 'earlier entries kept')
  })

  t.test('database stopped: store calls fail with StoreUnavailableError; restarted: the feed recovers', async (t) => {
    const p = await svcA.login('alice', 'pw')
    const reloads = feedB.status.reloads
    await cluster.stop()
    await until('feed B not ready', () => !feedB.ready, 5000)
    t.equal(feedB.status.state, 'reconnecting')
    t.equal(denyB.check({ jti: 'jti-live' }), 'token_revoked', 'old entries stay in force while disconnected')

    const calls: Array<[string, () => Promise<unknown>]> = [
      ['findUserByName', () => storeA.findUserByName('alice')],
      ['listUsers', () => storeA.listUsers()],
      ['transaction', () => storeA.transaction(async (tx) => await tx.getSession('x'))],
      ['migrate', () => storeA.migrate()],
      ['loadRevocations', () => storeA.loadRevocations(new Date())],
      ['login', () => svcA.login('alice', 'pw')],
      ['refresh', () => svcA.refresh(p.refreshToken)],
      ['logout', () => svcA.logout(p.refreshToken, undefined)],
      ['listen', () => storeA.listenRevocations(() => {}, () => {})],
    ]
    for (const [name, call] of calls) {
      const err = await call().then(() => undefined, (e: unknown) => e)
      t.ok(err instanceof StoreUnavailableError, `${name} → StoreUnavailableError`)
      t.match(err, { code: 'store_unavailable', statusCode: 503 }, name)
      t.ok((err as Error | undefined)?.cause, `${name} keeps the cause`)
    }

    await cluster.start()
    // the pool reconnects on its own; the first query after a restart may still race
    await until('store A answers', async () => storeA.findUserByName('alice').then(() => true, () => false), 5000)
    await svcA.revokeJti('jti-after-restart', Math.floor(clock() / 1000) + 600)
    await until('feed B ready again', () => feedB.ready && feedB.status.reloads > reloads, 5000)
    await until('entry made after restart on B', () => denyB.check({ jti: 'jti-after-restart' }) === 'token_revoked', 1000)
    t.pass('revocation made around the restart reached replica B')
    const p2 = await svcA.refresh(p.refreshToken)
    t.ok(p2.accessToken, 'refresh works again')
  })

  t.test('close stops the feed', async (t) => {
    const deny = new Denylist()
    const feed = new RevocationFeed({ store: storeB, denylist: deny })
    await feed.start()
    await feed.close()
    t.equal(feed.status.state, 'closed')
    await svcA.revokeJti('jti-after-close', Math.floor(clock() / 1000) + 600)
    await new Promise((resolve) => setTimeout(resolve, 200))
    t.equal(deny.check({ jti: 'jti-after-close' }), undefined)
  })
}
