/**
 * Regression (issue 9 item 5): a LISTEN connection that dies silently (a NAT or load
 * balancer forgets the flow, a failover leaves a half-open socket) was never noticed: no
 * heartbeat, OS keep-alive after 2 h, no periodic catch-up — the replica stayed "ready"
 * while missing revocations for hours.
 *
 * The black hole is real: a TCP proxy (node:net) sits between the feed's LISTEN
 * connection and PostgreSQL and, on command, stops forwarding bytes in both directions
 * without closing either socket. Within ~2 heartbeats the feed must notice, reconnect
 * (the proxy forwards new connections again) and reload, so a revocation written
 * meanwhile (its NOTIFY lost in the hole) is in the denylist. A terminated backend (a
 * clean close) and the periodic reconcile (a row that was never notified) are checked too.
 */
import t from 'tap'
import { connect, createServer } from 'node:net'
import type { AddressInfo, Server, Socket } from 'node:net'
import pg from 'pg'
import { Denylist } from '../../src/pipeline/denylist.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import { openStore } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { until } from '../fixtures/until.js'

const HEARTBEAT_MS = 300

interface BlackHoleProxy {
  url: string
  /** existing connections stop forwarding (both ways), without being closed */
  blackHole: () => number
  close: () => Promise<void>
}

async function startProxy (target: { host: string, port: number }, dbUrl: string): Promise<BlackHoleProxy> {
  const pairs = new Set<{ client: Socket, server: Socket, holed: boolean }>()
  const srv: Server = createServer((client) => {
    const server = connect(target.port, target.host)
    const pair = { client, server, holed: false }
    pairs.add(pair)
    // forward by hand, so forwarding can stop without a close (pipe() would propagate end/close)
    client.on('data', (chunk) => { if (!pair.holed) server.write(chunk) })
    server.on('data', (chunk) => { if (!pair.holed) client.write(chunk) })
    const drop = (): void => {
      pairs.delete(pair)
      if (!pair.holed) { client.destroy(); server.destroy() }
    }
    client.on('close', drop)
    server.on('close', drop)
    client.on('error', () => {})
    server.on('error', () => {})
  })
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as AddressInfo).port
  const u = new URL(dbUrl)
  u.host = `127.0.0.1:${port}`
  return {
    url: u.toString(),
    blackHole: () => {
      let n = 0
      for (const p of pairs) if (!p.holed) { p.holed = true; n++ }
      return n
    },
    close: async () => {
      for (const p of pairs) { p.client.destroy(); p.server.destroy() }
      await new Promise<void>((resolve) => srv.close(() => resolve()))
    },
  }
}

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('dead_listen')
  const proxy = await startProxy({ host: '127.0.0.1', port: cluster.port }, url)
  t.teardown(() => proxy.close())
  // queries go straight to PostgreSQL; only the LISTEN connection passes the proxy
  const feedStore: Store = await openStore({ url, listenUrl: proxy.url })
  const writer: Store = await openStore({ url })
  t.teardown(async () => { await feedStore.close(); await writer.close() })
  const nowSec = (): number => Math.floor(Date.now() / 1000)
  const revoke = async (jti: string): Promise<void> => {
    await writer.transaction(async (tx) => { await tx.insertRevocation({ kind: 'jti', value: jti, expiresAtSec: nowSec() + 600 }, new Date()) })
  }

  t.test('a black-holed listen connection is noticed within ~2 heartbeats; the catch-up delivers what was lost', async (t) => {
    const deny = new Denylist()
    const feed = new RevocationFeed({
      store: feedStore, denylist: deny, heartbeatIntervalMs: HEARTBEAT_MS, reconcileIntervalMs: 0, reconnectMinDelayMs: 50, reconnectMaxDelayMs: 200,
    })
    t.teardown(() => feed.close())
    await feed.start()
    await revoke('before-the-hole')
    await until('a live notification', () => deny.check({ jti: 'before-the-hole' }) === 'token_revoked', 1000)
    await until('a heartbeat round trip', () => feed.status.heartbeats.ok > 0, 5 * HEARTBEAT_MS)

    const reloads = feed.status.reloads
    t.equal(proxy.blackHole(), 1, 'the one listen connection goes silent (not closed)')
    const t0 = performance.now()
    await revoke('lost-in-the-hole') // its NOTIFY never arrives
    const noticedMs = await until('the feed notices', () => feed.status.state !== 'ready' || feed.status.reloads > reloads, 10 * HEARTBEAT_MS)
    t.ok(noticedMs <= 3 * HEARTBEAT_MS, `noticed ${noticedMs.toFixed(0)} ms after the hole (heartbeat ${HEARTBEAT_MS} ms)`)
    await until('reconnected and reloaded', () => feed.ready && feed.status.reloads > reloads, 10 * HEARTBEAT_MS)
    t.equal(deny.check({ jti: 'lost-in-the-hole' }), 'token_revoked', 'the revocation written meanwhile is in the denylist')
    t.ok(feed.status.heartbeats.failed >= 1, 'a heartbeat failed')
    t.comment(`back to ready ${(performance.now() - t0).toFixed(0)} ms after the hole`)
    await revoke('after-the-hole')
    await until('notifications flow again', () => deny.check({ jti: 'after-the-hole' }) === 'token_revoked', 1000)
  })

  t.test('a terminated backend (clean close) reconnects and reloads too', async (t) => {
    const deny = new Denylist()
    const feed = new RevocationFeed({ store: feedStore, denylist: deny, heartbeatIntervalMs: HEARTBEAT_MS, reconcileIntervalMs: 0, reconnectMinDelayMs: 50 })
    t.teardown(() => feed.close())
    await feed.start()
    const reloads = feed.status.reloads
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(() => admin.end())
    await admin.query('BEGIN')
    await admin.query('INSERT INTO revocations (kind, value, expires_at, created_at) VALUES (\'jti\', \'silent-terminate\', now() + interval \'10 minutes\', now())')
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE application_name = 'portcullis-revocation-feed' AND datname = current_database()`)
    await admin.query('COMMIT')
    await until('reloaded', () => feed.ready && feed.status.reloads > reloads, 10 * HEARTBEAT_MS)
    t.equal(deny.check({ jti: 'silent-terminate' }), 'token_revoked')
  })

  t.test('the periodic reconcile reloads even when the connection looks fine', async (t) => {
    const deny = new Denylist()
    const feed = new RevocationFeed({ store: feedStore, denylist: deny, heartbeatIntervalMs: HEARTBEAT_MS, reconcileIntervalMs: 200 })
    t.teardown(() => feed.close())
    await feed.start()
    const admin = new pg.Client({ connectionString: url })
    await admin.connect()
    t.teardown(() => admin.end())
    // a row whose NOTIFY never existed (written by hand, or lost by a pooler)
    await admin.query('INSERT INTO revocations (kind, value, expires_at, created_at) VALUES (\'jti\', \'never-notified\', now() + interval \'10 minutes\', now())')
    await until('the reconcile finds it', () => deny.check({ jti: 'never-notified' }) === 'token_revoked', 2000)
    t.ok(feed.ready, 'still the same, healthy connection')
  })
}
