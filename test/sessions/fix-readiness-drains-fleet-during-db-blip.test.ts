/**
 * Regression (issue 9 item 4): while the revocation feed reconnected, every replica said
 * "not ready", so a load balancer drained the whole fleet during a database blip — a full
 * outage of proxied traffic the gateway could have served. The feed now gives a verdict:
 * - before the first load: not ready (fail closed at boot, unchanged);
 * - reconnecting, `maxStaleness` 0 (default): ready but degraded, with the staleness;
 * - reconnecting, `maxStaleness` > 0: not ready once the denylist is staler than that.
 * A real PostgreSQL is stopped and started; staleness is read at injected instants.
 */
import t from 'tap'
import { Denylist } from '../../src/pipeline/denylist.js'
import { RevocationFeed } from '../../src/sessions/revocation-feed.js'
import { openStore } from '../../src/sessions/store.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { until } from '../fixtures/until.js'

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('blip')
  const store = await openStore({ url })
  t.teardown(() => store.close())

  t.test('the database goes away and comes back', async (t) => {
    const lenient = new RevocationFeed({ store, denylist: new Denylist(), heartbeatIntervalMs: 200, reconnectMinDelayMs: 50, reconnectMaxDelayMs: 200 })
    const strict = new RevocationFeed({ store, denylist: new Denylist(), heartbeatIntervalMs: 200, reconnectMinDelayMs: 50, reconnectMaxDelayMs: 200, maxStalenessMs: 5_000 })
    t.teardown(async () => { await lenient.close(); await strict.close() })
    await Promise.all([lenient.start(), strict.start()])
    for (const feed of [lenient, strict]) t.match(feed.health(), { ready: true, degraded: false }, 'connected: ready')
    t.ok(lenient.health().stalenessMs < 1000, 'staleness of a connected feed is about one heartbeat at most')

    await cluster.stop()
    await until('both feeds notice', () => !lenient.ready && !strict.ready, 5000)
    const now = Date.now()
    const h = lenient.health(now)
    t.match(h, { ready: true, degraded: true, reason: /revocation feed reconnecting.*serving with the last denylist/ },
      'maxStaleness 0: still ready, degraded (the fleet keeps serving)')
    t.ok(h.stalenessMs >= 0, `staleness ${h.stalenessMs} ms`)
    t.ok(lenient.health(now + 3_600_000).ready, 'an hour later: still ready (exposure bounded by the access-token TTL)')
    t.ok(lenient.health(now + 60_000).stalenessMs >= 60_000, 'the staleness grows for the metric')
    t.match(strict.health(now), { ready: true, degraded: true }, 'maxStaleness 5 s: ready while within it')
    t.match(strict.health(now + 6_000), { ready: false, degraded: true, reason: /maxStaleness 5 s/ }, 'not ready once staler than maxStaleness')

    await cluster.start()
    await until('both feeds reconnect', () => lenient.ready && strict.ready, 15_000)
    for (const feed of [lenient, strict]) t.match(feed.health(), { ready: true, degraded: false }, 'reconnected: ready, not degraded')
  })

  t.test('before the first load the gateway is not ready (fail closed at boot)', async (t) => {
    await cluster.stop()
    t.teardown(() => cluster.start())
    const feed = new RevocationFeed({ store, denylist: new Denylist(), reconnectMinDelayMs: 50, reconnectMaxDelayMs: 100 })
    const started = feed.start().catch(() => {})
    await until('a failed attempt', () => feed.status.lastError !== undefined, 5000)
    t.match(feed.health(), { ready: false, degraded: false, reason: /revocation feed starting/ })
    t.match(feed.health(Date.now() + 3_600_000), { ready: false }, 'whatever the time')
    await feed.close()
    await started
    t.match(feed.health(), { ready: false, reason: 'revocation feed closed' })
  })
}
