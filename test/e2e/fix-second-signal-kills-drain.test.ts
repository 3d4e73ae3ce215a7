import t, { type Test } from 'tap'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { heldUpstream, type RecordingUpstream } from '../fixtures/upstream.js'
import { startGatewayProcess, type GatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { requestOnce, tryConnect, type FreshResponse } from '../fixtures/raw-client.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'

// Operations review 2, F2: src/server.ts and src/workers.ts handled SIGTERM and SIGINT with
// process.once, so a repeat got Node's default action. A second SIGTERM (or a Ctrl-C after
// the first) during a drain ended the gateway at once, exit 143 in ~0.5 s, every request in
// flight lost. With `server.workers: 2`, one `kill -TERM -- -PGID` (systemd's
// KillMode=control-group, a shell's kill of the group) reached the primary and every worker:
// each worker began its own drain, then got the primary's SIGTERM on top and died; the
// primary logged "stopped" and exited 0 after ~0.1 s with every request lost. Now a repeat
// changes nothing (logged once), workers ignore both signals and drain when the primary tells
// them, and a worker that dies by a signal during the shutdown is reported (exit 1).
// Real processes, a real process group (setsid), real PostgreSQL (workers need it).

const avail = pgAvailability()

type Res = FreshResponse
/** one request on a fresh connection; the error code when there is no answer */
const send = async (url: string, timeoutMs = PROCESS_WAIT_MS): Promise<Res | string> => await requestOnce(url, timeoutMs)

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch { return false }
}
/** resolves with the exit if the process ended within `ms`, else undefined */
const exitWithin = async (gw: GatewayProcess, ms: number): Promise<unknown> => await Promise.race([gw.exited, new Promise(resolve => setTimeout(resolve, ms, undefined))])
const statuses = (results: Array<Res | string>): Array<number | string> => results.map(r => typeof r === 'string' ? r : r.status)
/** the JSON log lines (several processes share one pipe: a line cut by another's write is skipped) */
const logLines = (gw: GatewayProcess): Array<Record<string, unknown>> => gw.output().split('\n').flatMap(l => { try { return [JSON.parse(l) as Record<string, unknown>] } catch { return [] } })

/** a gateway in its own process group (setsid), as systemd or a shell's job runs it; teardown kills the whole group */
async function startFleet (t: Test, database: string, upstream: RecordingUpstream, name: string): Promise<GatewayProcess & { workers: () => Promise<number[]> }> {
  const key = makeKey('EdDSA')
  // a long shutdownTimeout: the drain ends when the test releases the requests, not on a clock
  const config = baseConfig(key, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, auth: 'public' }], { server: { workers: 2, shutdownTimeout: '60s' }, logging: { level: 'info' } })
  config.database = { url: database }
  const gw = await startGatewayProcess(t, { config, key, name, wrap: ['setsid'] })
  t.teardown(() => { try { process.kill(-gw.pid, 'SIGKILL') } catch {} })
  const workers = async (): Promise<number[]> => {
    const r = await send(`${gw.adminUrl}/admin/workers`, 5000)
    return typeof r === 'string' ? [] : (JSON.parse(r.body) as { workers: Array<{ pid: number, listening: boolean }> }).workers.filter(w => w.listening).map(w => w.pid)
  }
  await until('both workers ready', async () => {
    const r = await send(`${gw.adminUrl}/readyz`, 5000)
    return typeof r !== 'string' && r.status === 200 && JSON.parse(r.body).status === 'ready'
  }, PROCESS_WAIT_MS)
  return { ...gw, workers }
}

t.test('fix-second-signal-kills-drain', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)

  t.test('one process: a second SIGTERM, and a SIGINT, during the drain change nothing', async (t) => {
    const key = makeKey('EdDSA')
    const upstream = await heldUpstream(t)
    const config = baseConfig(key, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, auth: 'public' }], { server: { shutdownTimeout: '60s' }, logging: { level: 'info' } })
    config.database = { url: await pg.createDatabase('second_signal_one') }
    const gw = await startGatewayProcess(t, { config, key, name: 'second-signal-one' })

    const inFlight = Promise.all([1, 2, 3].map(async i => await send(`${gw.url}/slow/${i}`)))
    await until('the requests to reach the upstream', () => upstream.requests.length === 3, PROCESS_WAIT_MS)
    process.kill(gw.pid, 'SIGTERM')
    await until('the drain to begin (the public port refuses)', async () => await tryConnect(gw.port) === 'ECONNREFUSED', PROCESS_WAIT_MS)
    // what the review sent 0.5 s after the first, and what an impatient operator adds
    process.kill(gw.pid, 'SIGTERM')
    process.kill(gw.pid, 'SIGINT')
    process.kill(gw.pid, 'SIGTERM')
    const early = await exitWithin(gw, 500)
    t.equal(early, undefined, `still draining 0.5 s after the repeats (it exited: ${JSON.stringify(early)})`)

    upstream.release()
    t.same(statuses(await inFlight), [200, 200, 200], 'every request in flight completes')
    const exit = await gw.exited
    t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'the gateway exits 0 by itself')
    const repeats = logLines(gw).filter(l => typeof l.msg === 'string' && l.msg.startsWith('already draining'))
    t.equal(repeats.length, 1, 'the repeats are logged once')
  })

  t.test('workers: a SIGTERM to the whole process group, and repeats, drain every worker', async (t) => {
    const upstream = await heldUpstream(t)
    const gw = await startFleet(t, await pg.createDatabase('second_signal_group'), upstream, 'second-signal-group')
    const pids = await gw.workers()
    t.equal(pids.length, 2, 'two workers')

    // fresh connections: the primary hands them to both workers
    const inFlight = Promise.all([1, 2, 3, 4, 5, 6].map(async i => await send(`${gw.url}/slow/${i}`)))
    await until('the requests to reach the upstream', () => upstream.requests.length === 6, PROCESS_WAIT_MS)
    // kill(-PGID): the primary and each worker get it. Each worker then got the primary's
    // SIGTERM too; whether it died of it depended on whether its own had been handled by then
    // (two pending SIGTERMs are delivered as one): the review saw it die in ~0.1 s
    process.kill(-gw.pid, 'SIGTERM')
    await until('the drain to begin (the public port refuses)', async () => await tryConnect(gw.port) === 'ECONNREFUSED', PROCESS_WAIT_MS)
    t.same(pids.filter(alive), pids, 'both workers are alive after the group\'s SIGTERM')
    // the same again, and a Ctrl-C: every process gets each one after it handled the first
    process.kill(-gw.pid, 'SIGTERM')
    process.kill(-gw.pid, 'SIGINT')
    const early = await exitWithin(gw, 500)
    t.equal(early, undefined, `the primary is still draining 0.5 s after the repeats (it exited: ${JSON.stringify(early)})`)
    t.same(pids.filter(alive), pids, 'and both workers are alive, draining')

    upstream.release()
    t.same(statuses(await inFlight), [200, 200, 200, 200, 200, 200], 'every request in flight completes')
    const exit = await gw.exited
    t.same({ code: exit.code, signal: exit.signal }, { code: 0, signal: null }, 'the primary exits 0 once every worker drained')
    const lines = logLines(gw)
    t.same(lines.filter(l => l.event === 'worker_not_drained' || l.event === 'worker_died'), [], 'no worker died')
    t.ok(lines.some(l => l.msg === 'a worker leaves SIGTERM and SIGINT to its primary, which tells it when to drain'), 'a worker logs that it leaves the signal to its primary')
  })

  t.test('workers: a worker that dies by a signal during the shutdown is reported, and the primary exits 1', async (t) => {
    const upstream = await heldUpstream(t)
    const gw = await startFleet(t, await pg.createDatabase('second_signal_killed'), upstream, 'second-signal-killed')
    const pids = await gw.workers()
    const inFlight = Promise.all([1, 2, 3, 4].map(async i => await send(`${gw.url}/slow/${i}`)))
    await until('the requests to reach the upstream', () => upstream.requests.length === 4, PROCESS_WAIT_MS)
    process.kill(gw.pid, 'SIGTERM')
    await until('the drain to begin (the public port refuses)', async () => await tryConnect(gw.port) === 'ECONNREFUSED', PROCESS_WAIT_MS)
    const victim = pids[0] as number
    process.kill(victim, 'SIGKILL')
    upstream.release()
    await inFlight
    const exit = await gw.exited
    t.same({ code: exit.code, signal: exit.signal }, { code: 1, signal: null }, 'the primary exits 1: requests in flight were lost')
    t.ok(logLines(gw).some(l => l.event === 'worker_not_drained' && l.pid === victim && l.signal === 'SIGKILL'), `worker_not_drained names the worker and the signal (output: ${gw.output().slice(-1500)})`)
  })
})
