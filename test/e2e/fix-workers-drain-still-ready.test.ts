import t from 'tap'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { heldUpstream } from '../fixtures/upstream.js'
import { startGatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { requestOnce, tryConnect, type FreshResponse } from '../fixtures/raw-client.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'
import { healthReport, type HealthCheck } from '../../src/health.js'

// Operations review, finding 2: with `server.workers > 1`, after SIGTERM to the primary with a
// request in flight, /readyz answered 200 `degraded` ("workers: 1 of 2 workers answering") for
// the whole drain while the public port refused connections: a load balancer polling /readyz
// kept sending traffic for up to server.shutdownTimeout + 5 s. Readiness now reports
// `shutdown: draining` (down, so 503 not_ready) from the moment the drain begins, and the
// primary's admin listener keeps saying so until the last worker has exited.
// One process: readiness turns not ready first, and its admin listener stays up (saying so)
// until the public one has closed (src/server.ts).

const avail = pgAvailability()
const DRAINING = { name: 'shutdown', state: 'down', reason: 'draining' }

type Res = FreshResponse
/** one request on a fresh connection; the error code when there is no answer */
const send = async (url: string, timeoutMs = 5000): Promise<Res | string> => await requestOnce(url, timeoutMs)

const checksOf = (r: Res | string): HealthCheck[] => typeof r === 'string' ? [] : (JSON.parse(r.body) as { checks?: HealthCheck[] }).checks ?? []
const show = (r: Res | string): string => typeof r === 'string' ? r : `${r.status} ${r.body.slice(0, 160)}`

t.test('fix-workers-drain-still-ready: workers — /readyz is 503 for the whole drain, while the public port refuses', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const url = await pg.createDatabase('workers_drain')
  const key = makeKey('EdDSA')
  const upstream = await heldUpstream(t)
  // a long shutdownTimeout: the drain ends when the test releases the request, not on a clock
  const config = baseConfig(key, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, auth: 'public' }], {
    server: { workers: 2, shutdownTimeout: '60s' },
  })
  config.database = { url }
  const gw = await startGatewayProcess(t, { config, key, name: 'workers-drain' })
  // /readyz is 200 as soon as one worker answers: wait for both
  await until('both workers ready', async () => {
    const r = await send(`${gw.adminUrl}/readyz`)
    return typeof r !== 'string' && r.status === 200 && JSON.parse(r.body).status === 'ready'
  }, PROCESS_WAIT_MS)

  const inFlight = send(`${gw.url}/slow/1`, PROCESS_WAIT_MS)
  await until('the request to reach the upstream', () => upstream.requests.length === 1, PROCESS_WAIT_MS)
  process.kill(gw.pid, 'SIGTERM')

  // poll until the public port refuses (the workers got SIGTERM, so the primary is draining)
  // and the worker without a request has exited (what the review saw: the other one, holding
  // the request, still answered "ok"), then ask /readyz a few more times while the request is held
  const before: Array<Res | string> = []
  const workers = async (): Promise<number> => {
    const r = await send(`${gw.adminUrl}/admin/workers`)
    return typeof r === 'string' ? -1 : (JSON.parse(r.body) as { workers: unknown[] }).workers.length
  }
  await until('the public port to refuse connections and one worker to be left', async () => {
    before.push(await send(`${gw.adminUrl}/readyz`))
    return await tryConnect(gw.port) === 'ECONNREFUSED' && await workers() === 1
  }, PROCESS_WAIT_MS)
  const during: Array<Res | string> = []
  for (let i = 0; i < 5; i++) during.push(await send(`${gw.adminUrl}/readyz`))
  t.equal(upstream.requests.length, 1, 'the request is still in flight: the drain is under way')

  t.same(during.map(r => typeof r === 'string' ? r : r.status), [503, 503, 503, 503, 503], `while the port refuses, /readyz is 503 (${during.map(show).join(' | ')})`)
  t.ok(during.every(r => typeof r !== 'string' && JSON.parse(r.body).status === 'not_ready'), 'not_ready')
  t.ok(during.every(r => checksOf(r).some(c => c.name === DRAINING.name && c.state === DRAINING.state && c.reason === DRAINING.reason)), 'with the shutdown check: draining')
  // once it said 503 it never said 200 again (before the primary handled the signal, 200 is right)
  const firstDown = before.findIndex(r => typeof r !== 'string' && r.status === 503)
  const after = firstDown < 0 ? [] : before.slice(firstDown)
  t.ok(after.every(r => typeof r !== 'string' && r.status === 503), `no 200 after the first 503 (${before.map(show).join(' | ')})`)

  upstream.release()
  const done = await inFlight
  t.equal(typeof done === 'string' ? done : done.status, 200, 'the request in flight completes')
  const exit = await gw.exited
  t.equal(exit.code, 0, 'the primary exits 0 once every worker has drained')
  t.equal(await tryConnect(gw.adminPort), 'ECONNREFUSED', 'and then its admin listener is closed')
})

t.test('fix-workers-drain-still-ready: one process — readiness turns not ready before any listener closes', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await heldUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, auth: 'public' }], { server: { shutdownTimeout: '60s' } }))
  const ready = await send(`${gw.adminUrl}/readyz`)
  t.equal(typeof ready === 'string' ? ready : ready.status, 200, 'ready before')

  const inFlight = send(`${gw.url}/slow/1`, PROCESS_WAIT_MS)
  await until('the request to reach the upstream', () => upstream.requests.length === 1, PROCESS_WAIT_MS)
  const drained = gw.close()
  // the drain has begun (shutdown() ran up to its first await); the listeners close later
  const listening = { public: gw.gateway.app.server.listening, admin: gw.gateway.admin.server.listening }
  const report = healthReport(gw.gateway.readiness.map(check => check()))
  t.same(listening, { public: true, admin: true }, 'both listeners are still bound when the drain begins')
  t.equal(report.status, 'not_ready', 'and readiness already says not ready (503)')
  t.same(report.checks.filter(c => c.name === 'shutdown'), [DRAINING], 'shutdown: draining')

  // over the network (already so before the fix): no probe during the drain gets a 200
  const probes: Array<Res | string> = []
  for (let i = 0; i < 5; i++) probes.push(await send(`${gw.adminUrl}/readyz`))
  t.ok(probes.every(r => typeof r === 'string' ? r === 'ECONNREFUSED' : r.status === 503), `/readyz during the drain: 503 or refused (${probes.map(show).join(' | ')})`)
  t.equal(upstream.requests.length, 1, 'while the request is still in flight')

  upstream.release()
  const done = await inFlight
  t.equal(typeof done === 'string' ? done : done.status, 200, 'the request in flight completes')
  await drained
})
