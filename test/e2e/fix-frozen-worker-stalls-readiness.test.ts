import t from 'tap'
import { request as httpRequest } from 'node:http'
import { performance } from 'node:perf_hooks'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startGatewayProcess, type GatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'
import type { HealthCheck } from '../../src/health.js'

// Operations review 2, F3: with `server.workers`, one frozen worker (SIGSTOP stands in for a
// stuck event loop) made every /readyz and /metrics on the primary take 2.0 s — it waited
// IPC_TIMEOUT_MS (2 s) for the worker's answer, and deploy/kubernetes probes with
// timeoutSeconds: 2 — while /readyz did not say which worker was silent, and the frozen
// worker stayed in the fleet for ever. Now the primary waits 500 ms for an answer, names a
// worker that missed it (and counts the misses), and asks every worker each second itself:
// one silent for 3 s is drained and replaced, logged as `worker_unresponsive`. A worker that
// is still starting is never asked, so never replaced for being slow to start.
// Real processes (node:cluster), real signals, real PostgreSQL.

const avail = pgAvailability()
/** the shutdownTimeout of this fleet: a retired worker that cannot drain is killed 5 s after it (src/workers.ts DRAIN_GRACE_MS) */
const SHUTDOWN_TIMEOUT_MS = 1000

interface Res { status: number, body: string, ms: number }

/** one request on a fresh connection, timed */
function send (url: string, timeoutMs = 5000): Promise<Res> {
  const t0 = performance.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, ms: performance.now() - t0 }))
      res.on('error', reject)
    })
    req.setTimeout(timeoutMs, () => { req.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })) })
    req.on('error', reject)
    req.end()
  })
}

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch { return false }
}
const logLines = (gw: GatewayProcess): Array<Record<string, unknown>> => gw.output().split('\n').flatMap(l => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } })

t.test('fix-frozen-worker-stalls-readiness', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'public' }], {
    server: { workers: 2, shutdownTimeout: `${SHUTDOWN_TIMEOUT_MS}ms` },
    logging: { level: 'info' },
  })
  config.database = { url: await pg.createDatabase('frozen_worker') }
  const gw = await startGatewayProcess(t, { config, key, name: 'frozen-worker' })
  const stopped = new Set<number>()
  // a stopped worker outlives nothing: continue it, so that the primary's death ends it
  t.teardown(() => { for (const pid of stopped) if (alive(pid)) process.kill(pid, 'SIGCONT') })

  const workers = async (): Promise<Array<{ pid: number, listening: boolean }>> => JSON.parse((await send(`${gw.adminUrl}/admin/workers`)).body).workers
  const listening = async (): Promise<number[]> => (await workers()).filter(w => w.listening).map(w => w.pid)
  await until('both workers ready', async () => {
    const r = await send(`${gw.adminUrl}/readyz`)
    return r.status === 200 && JSON.parse(r.body).status === 'ready'
  }, PROCESS_WAIT_MS)
  const [frozen, other] = await listening() as [number, number]
  let slowStarter: number | undefined

  t.test('a frozen worker: /readyz and /metrics answer within a probe timeout, and name it', async (t) => {
    process.kill(frozen, 'SIGSTOP')
    stopped.add(frozen)
    const readyz = await send(`${gw.adminUrl}/readyz`)
    const metrics = await send(`${gw.adminUrl}/metrics`)
    // deploy/kubernetes: timeoutSeconds 2; it took 2.0 s
    t.ok(readyz.ms < 1000, `/readyz answered in ${Math.round(readyz.ms)} ms`)
    t.ok(metrics.ms < 1000, `/metrics answered in ${Math.round(metrics.ms)} ms`)
    const report = JSON.parse(readyz.body) as { status: string, checks: HealthCheck[] }
    t.equal(readyz.status, 200, 'the pod still serves with the other worker')
    t.equal(report.status, 'degraded', 'degraded')
    const check = report.checks.find(c => c.name === 'workers')
    t.match(check?.reason, new RegExp(`worker ${frozen} not answering`), `the workers check names the frozen worker (${check?.reason ?? 'none'})`)
    t.same(check?.detail?.notAnswering, [frozen], 'detail.notAnswering')
    t.same(check?.detail?.pids, [other], 'the other worker answers')
    const misses = Number(/^portcullis_worker_health_misses_total (\d+)/m.exec(metrics.body)?.[1])
    t.ok(misses >= 1, `its misses are counted (portcullis_worker_health_misses_total ${misses})`)
  })

  t.test('unprobed, the frozen worker is replaced', async (t) => {
    // /admin/workers asks no worker: only the primary's own heartbeat can find it stuck
    const replaced = await until('the frozen worker to be replaced', async () => {
      const now = await listening()
      return now.length === 2 && !now.includes(frozen)
    }, 60_000).then(() => true, () => false)
    t.ok(replaced, 'two workers listen again, the frozen one not among them')
    t.notOk(alive(frozen), 'the frozen worker was killed (it could not drain)')
    t.ok((await listening()).includes(other), 'the other worker served throughout')
    const r = await send(`${gw.adminUrl}/readyz`)
    t.equal(JSON.parse(r.body).status, 'ready', '/readyz is ready again')
  })

  t.test('a worker slow to start is not replaced for it', async (t) => {
    const before = await listening()
    const victim = before.find(pid => pid !== other) ?? before[0] as number
    process.kill(victim, 'SIGKILL')
    // its replacement, caught before it listens, stopped for longer than a silent worker is allowed
    let starting: number | undefined
    await until('the replacement to be forked', async () => {
      starting = (await workers()).find(w => !w.listening && w.pid !== victim)?.pid
      return starting !== undefined
    }, PROCESS_WAIT_MS)
    const pid = starting as number
    slowStarter = pid
    process.kill(pid, 'SIGSTOP')
    stopped.add(pid)
    await new Promise(resolve => setTimeout(resolve, 4500))
    process.kill(pid, 'SIGCONT')
    await until('the slow worker to listen', async () => (await listening()).includes(pid), PROCESS_WAIT_MS)
    t.ok(alive(pid), 'it listens, and was not replaced')
  })

  t.test('the replacement is logged', async (t) => {
    // the log is buffered: the lines come at exit
    process.kill(gw.pid, 'SIGTERM')
    const exit = await gw.exited
    t.equal(exit.code, 0, 'the primary drains and exits 0')
    const lines = logLines(gw)
    t.ok(lines.some(l => l.event === 'worker_unresponsive' && l.pid === frozen), `worker_unresponsive names the frozen worker (output: ${gw.output().slice(-1500)})`)
    t.ok(lines.some(l => l.event === 'worker_died' && l.pid === frozen && l.signal === 'SIGKILL'), 'and its replacement (worker_died, SIGKILL)')
    t.notOk(lines.some(l => l.event === 'worker_unresponsive' && l.pid === slowStarter), 'the worker slow to start was not found stuck')
  })
})
