/**
 * Regression (revocation review, 2026-12-05, finding 1): after a blip the revocation feed's
 * reconnect could wait on LISTEN for ever. Only connect() was bounded; the heartbeat and the
 * reconcile start only once connected, and there is one reconnect loop — so a reconnect that
 * landed on a stalled peer (a flow half-open right after the handshake, a paused backend, a
 * full session-mode pool in front of `listenUrl`) stopped the feed for good: revocations made
 * by other replicas never arrived, and the replica still said ready (degraded).
 *
 * Every connection attempt (connect, LISTEN, reload) now has a deadline of two heartbeat
 * intervals (ATTEMPT_TIMEOUT_HEARTBEATS in revocation-feed.ts), and the PostgreSQL driver
 * destroys a LISTEN connection whose setup outlasts LISTEN_SETUP_TIMEOUT_MS (its connect
 * timeout, 5 s). The faults are real: PostgreSQL 15 behind a TCP proxy that reads the frontend
 * protocol (test/fixtures/pg-fault-proxy.ts), so it can reset the feed's connection and stall one chosen message —
 * the startup succeeds, then nothing passes (or the query runs and its answer is held back).
 * No mock: the store is the real pg store; the test only wraps loadRevocations to learn when
 * the abandoned load's late answer has arrived, and counts Denylist.replace calls.
 *
 * The constants are written out here instead of imported, so that this file also runs (and
 * fails) against the code before the fix.
 */
import t from 'tap'
import type { RevocationEntry } from '../../src/pipeline/denylist.js'
import { Denylist } from '../../src/pipeline/denylist.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import { DEFAULT_CONNECT_TIMEOUT_MS } from '../../src/sessions/pg-store.js'
import { openStore } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PgFaultProxy } from '../fixtures/pg-fault-proxy.js'
import { until } from '../fixtures/until.js'

const HEARTBEAT_MS = 250
/** the attempt deadline: ATTEMPT_TIMEOUT_HEARTBEATS (2) heartbeat intervals */
const DEADLINE_MS = 2 * HEARTBEAT_MS
const MAX_DELAY_MS = 200
/**
 * After a stall, a revocation reaches the denylist within: the stalled attempt's deadline, one
 * backoff, and one clean attempt (connect, LISTEN, reload — 1.5 s of room for a loaded 2-core
 * machine; it takes tens of ms when quiet).
 */
const BOUND_MS = DEADLINE_MS + MAX_DELAY_MS + 1_500
/** LISTEN_SETUP_TIMEOUT_MS in pg-store.ts: the driver's connect timeout, now for the whole setup */
const LISTEN_SETUP_MS = DEFAULT_CONNECT_TIMEOUT_MS
/** closing a socket and seeing it closed on the other side of the proxy */
const CLOSE_SLACK_MS = 1_500

const FEED_APP = 'portcullis-revocation-feed'
const POOL_APP = 'portcullis'

/** counts full reloads: a late snapshot of an abandoned attempt must not replace anything */
class WatchedDenylist extends Denylist {
  replaced = 0
  override replace (entries: Iterable<RevocationEntry>): void {
    this.replaced++
    super.replace(entries)
  }
}

/** how long `cond` took to hold, or Infinity if it did not within `timeoutMs` (the assertion says which) */
async function within (what: string, cond: () => boolean, timeoutMs: number): Promise<number> {
  return await until(what, cond, timeoutMs).catch(() => Infinity)
}

const ms = (v: number): string => Number.isFinite(v) ? `${v.toFixed(0)} ms` : 'never'

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('feed_stall')
  // "another replica": straight to PostgreSQL
  const writer: Store = await openStore({ url })
  t.teardown(() => writer.close())
  const nowSec = (): number => Math.floor(Date.now() / 1000)
  const revoke = async (jti: string): Promise<void> => {
    await writer.transaction(async (tx) => { await tx.insertRevocation({ kind: 'jti', value: jti, expiresAtSec: nowSec() + 600 }, new Date()) })
  }

  interface Replica { proxy: PgFaultProxy, store: Store, feed: RevocationFeed, deny: WatchedDenylist, loads: Array<Promise<RevocationEntry[]>>, signals: Array<AbortSignal | undefined> }
  /** this replica: pool and LISTEN connection both through a proxy of its own */
  const replica = async (t: { teardown: (fn: () => unknown) => void }): Promise<Replica> => {
    const proxy = new PgFaultProxy(cluster.port)
    const opened: { store?: Store, feed?: RevocationFeed } = {}
    // the proxy before the store: a pool client whose answer it still holds is released only when its socket goes
    t.teardown(async () => { await opened.feed?.close(); await proxy.close(); await opened.store?.close() })
    await proxy.start()
    const store = opened.store = await openStore({ url: proxy.url('feed_stall') })
    const loads: Array<Promise<RevocationEntry[]>> = []
    const signals: Array<AbortSignal | undefined> = []
    const load = store.loadRevocations.bind(store)
    store.loadRevocations = (now, signal) => { const p = load(now, signal); loads.push(p); signals.push(signal); return p }
    const deny = new WatchedDenylist()
    const feed = opened.feed = new RevocationFeed({
      store, denylist: deny, heartbeatIntervalMs: HEARTBEAT_MS, reconcileIntervalMs: 0, reconnectMinDelayMs: 50, reconnectMaxDelayMs: MAX_DELAY_MS,
    })
    await feed.start()
    return { proxy, store, feed, deny, loads, signals }
  }

  t.test('a reconnect whose LISTEN stalls is abandoned at the deadline; the next one delivers', async (t) => {
    const { proxy, feed, deny } = await replica(t)
    await revoke('before-the-blip')
    await until('a live notification', () => deny.check({ jti: 'before-the-blip' }) === 'token_revoked', 1000)

    proxy.stallNext({ app: FEED_APP, match: /^LISTEN /, hold: 'query' })
    t.equal(proxy.reset(FEED_APP), 1, 'the listen connection is reset')
    await until('the reconnect reaches LISTEN and stalls', () => proxy.stalled().length === 1, 5000)
    const [stalled] = proxy.stalled()
    t.match(stalled?.stall?.query, /^LISTEN portcullis_revocations$/, 'stalled on the reconnect\'s first query, after a good startup')

    await revoke('during-the-stall') // its NOTIFY reaches no connection of this feed
    const took = await within('the revocation reaches this feed', () => deny.check({ jti: 'during-the-stall' }) === 'token_revoked', BOUND_MS + 2000)
    t.ok(took <= BOUND_MS, `a revocation made through the store during the stall is in the denylist after ${ms(took)} (bound ${BOUND_MS} ms: deadline ${DEADLINE_MS} + backoff ≤ ${MAX_DELAY_MS} + one attempt)`)
    t.ok(feed.ready, 'the feed is ready again')
    const beats = feed.status.heartbeats.ok
    t.ok(Number.isFinite(await within('a heartbeat on the new connection', () => feed.status.heartbeats.ok > beats, 5 * HEARTBEAT_MS)), 'heartbeats run again')
    await revoke('after-the-stall')
    t.ok(Number.isFinite(await within('notifications flow', () => deny.check({ jti: 'after-the-stall' }) === 'token_revoked', 1000)), 'notifications flow on the new connection')

    // the stalled connection is not left behind: the driver destroys it when its setup outlasts the bound
    const closed = await within('the stalled connection is closed', () => stalled?.closed === true, LISTEN_SETUP_MS + 2 * CLOSE_SLACK_MS)
    const sinceStall = performance.now() - (stalled?.stall?.atMs ?? 0)
    t.ok(Number.isFinite(closed) && sinceStall <= LISTEN_SETUP_MS + CLOSE_SLACK_MS,
      `the gateway closed the stalled connection ${ms(Number.isFinite(closed) ? sinceStall : Infinity)} after the stall (the driver's setup bound: ${LISTEN_SETUP_MS} ms from the attempt's start)`)
    t.equal(proxy.live(FEED_APP).length, 1, 'one listen connection remains')
  })

  t.test('a reload that stalls is abandoned too; its late snapshot replaces nothing', async (t) => {
    const { proxy, feed, deny, loads, signals } = await replica(t)
    // the reconnect's LISTEN passes; its load runs in PostgreSQL, and the answer is held back
    proxy.stallNext({ app: POOL_APP, match: /FROM revocations/, hold: 'answer' })
    const staleLoad = loads.length // the index the reconnect's load will take
    t.equal(proxy.reset(FEED_APP), 1, 'the listen connection is reset')
    await until('the reconnect\'s load is stalled', () => proxy.stalled().some((c) => c.app === POOL_APP), 5000)
    const stalled = proxy.stalled().find((c) => c.app === POOL_APP)

    await revoke('during-the-stalled-load')
    const took = await within('the revocation reaches this feed', () => deny.check({ jti: 'during-the-stalled-load' }) === 'token_revoked', BOUND_MS + 2000)
    t.ok(took <= BOUND_MS, `a revocation made through the store during the stalled load is in the denylist after ${ms(took)} (bound ${BOUND_MS} ms)`)
    t.ok(feed.ready, 'the feed is ready again')
    // a table of many pages would otherwise be read to its end beside the attempt that replaced it
    t.equal(signals[staleLoad]?.aborted, true, 'the abandoned load was told to stop at its next page')

    // a revocation the stale snapshot cannot contain (it was read before this commit)
    await revoke('after-the-recovery')
    t.ok(Number.isFinite(await within('notified', () => deny.check({ jti: 'after-the-recovery' }) === 'token_revoked', 1000)), 'notified on the new connection')
    const replaced = deny.replaced
    const size = deny.size
    stalled?.stall?.release()
    const late = await loads[staleLoad]
    await new Promise((resolve) => setImmediate(resolve)) // let the feed see the late answer
    t.notOk(late?.some((e) => e.value === 'after-the-recovery'), 'the late answer is a snapshot older than the last revocation')
    t.equal(deny.replaced, replaced, 'the late snapshot of the abandoned attempt replaced nothing')
    t.equal(deny.size, size, 'the denylist is unchanged')
    t.equal(deny.check({ jti: 'after-the-recovery' }), 'token_revoked', 'the newer revocation is still in force')
    t.ok(feed.ready, 'still ready')
  })

  t.test('a LISTEN that answers after the deadline does not come back as a second listener', async (t) => {
    const { proxy, feed, deny } = await replica(t)
    proxy.stallNext({ app: FEED_APP, match: /^LISTEN /, hold: 'query' })
    t.equal(proxy.reset(FEED_APP), 1, 'the listen connection is reset')
    await until('the reconnect\'s LISTEN is stalled', () => proxy.stalled().some((c) => !c.closed && c.app === FEED_APP), 5000)
    const stalled = proxy.stalled().find((c) => !c.closed && c.app === FEED_APP)
    const recovered = await within('the feed recovers past the stall', () => feed.ready, BOUND_MS + 2000)
    t.ok(recovered <= BOUND_MS, `ready again ${ms(recovered)} after the stall, without it (bound ${BOUND_MS} ms)`)
    const reloads = feed.status.reloads

    // the stalled LISTEN goes through at last, well before the driver's own setup bound
    t.ok(stalled !== undefined && !stalled.closed, 'the stalled connection is still open')
    stalled?.stall?.release()
    const closed = await within('the late listener is closed', () => stalled?.closed === true, CLOSE_SLACK_MS + 1000)
    t.ok(closed <= CLOSE_SLACK_MS, `the feed closes the late listener of the abandoned attempt (${ms(closed)} after it answered)`)
    t.equal(proxy.live(FEED_APP).length, 1, 'one listen connection remains')
    t.equal(feed.status.reloads, reloads, 'the late listener caused no reload')
    await revoke('after-the-late-listener')
    t.ok(Number.isFinite(await within('notified', () => deny.check({ jti: 'after-the-late-listener' }) === 'token_revoked', 1000)), 'notifications flow on the installed connection')
  })

  t.test('an attempt that ran out of time gives the next one twice as long (a slow reload still completes)', async (t) => {
    const { proxy, feed, deny } = await replica(t)
    proxy.stallNext({ app: POOL_APP, match: /FROM revocations/, hold: 'answer' })
    t.equal(proxy.reset(FEED_APP), 1, 'the listen connection is reset')
    await until('the first load is stalled', () => proxy.stalled().length === 1, 5000)
    proxy.stallNext({ app: POOL_APP, match: /FROM revocations/, hold: 'answer' })
    const second = await within('the second load is stalled', () => proxy.stalled().length === 2, BOUND_MS + 2000)
    t.ok(Number.isFinite(second), 'the first attempt was abandoned; the second one\'s load stalls too')
    t.match(feed.status.lastError, `within ${DEADLINE_MS} ms`, `the first attempt had ${DEADLINE_MS} ms`)
    const doubled = await within('the second attempt times out', () => (feed.status.lastError ?? '').includes(`within ${2 * DEADLINE_MS} ms`), 2 * BOUND_MS)
    t.ok(Number.isFinite(doubled), `the second attempt had ${2 * DEADLINE_MS} ms`)
    await revoke('after-two-stalls')
    const took = await within('the revocation reaches this feed', () => deny.check({ jti: 'after-two-stalls' }) === 'token_revoked', BOUND_MS + 2000)
    t.ok(took <= BOUND_MS, `the third attempt delivers a revocation made meanwhile after ${ms(took)} (bound ${BOUND_MS} ms)`)
    t.ok(feed.ready, 'the feed is ready again')
  })
}
