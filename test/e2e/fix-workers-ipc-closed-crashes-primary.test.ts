import t from 'tap'
import { request as httpRequest } from 'node:http'
import { resolve } from 'node:path'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { startGatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'

// Operations review, finding 4: the primary listened for no 'error' on its workers, and sent
// health and metrics requests (every /readyz and /metrics scrape) and reloads to every worker
// still marked listening — a worker was removed only on 'exit'. A send to a worker whose IPC
// channel had closed raised ERR_IPC_CHANNEL_CLOSED as an unhandled 'error': the primary
// exited 1 and every worker with it. It also told a worker to drain (SIGTERM) and never
// followed up: one that did not exit stayed in the fleet for ever.
// Real processes: test/fixtures/worker-closes-ipc.ts makes a real worker close its channel
// (cluster.worker.disconnect()) and stay alive, ignoring SIGTERM, so the window between
// 'disconnect' and 'exit' — milliseconds for a worker that dies — lasts as long as the test needs.

const avail = pgAvailability()
const SHUTDOWN_TIMEOUT_MS = 1000
/** src/workers.ts DRAIN_GRACE_MS: a worker told to drain is killed this long after server.shutdownTimeout */
const DRAIN_GRACE_MS = 5000

interface Res { status: number, body: string }

/** one request on a fresh connection; resolves with the error code when there is no answer */
function send (url: string, method = 'GET', headers: Record<string, string> = {}): Promise<Res | string> {
  return new Promise((resolve) => {
    const req = httpRequest(url, { method, headers, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    })
    req.setTimeout(15_000, () => { req.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })) })
    req.on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message))
    req.end()
  })
}

const alive = (pid: number): boolean => {
  try { process.kill(pid, 0); return true } catch { return false }
}

t.test('fix-workers-ipc-closed-crashes-primary: a worker whose IPC channel closed neither ends the primary nor stays in the fleet', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const url = await pg.createDatabase('workers_ipc')
  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'none', prefix: '/none', upstream: 'http://127.0.0.1:9', auth: 'public' }], { server: { workers: 2, shutdownTimeout: `${SHUTDOWN_TIMEOUT_MS}ms` }, logging: { level: 'info' } })
  config.database = { url }
  const fixture = resolve(import.meta.dirname, '..', 'fixtures', 'worker-closes-ipc.ts')
  const gw = await startGatewayProcess(t, { config, key, name: 'workers-ipc', nodeArgs: ['--import', 'tsx', '--import', fixture] })

  const listening = async (): Promise<number[]> => {
    const r = await send(`${gw.adminUrl}/admin/workers`)
    if (typeof r === 'string') return []
    return (JSON.parse(r.body).workers as Array<{ pid: number, listening: boolean }>).filter(w => w.listening).map(w => w.pid)
  }
  await until('two workers listening', async () => (await listening()).length === 2, PROCESS_WAIT_MS)
  const [victim, other] = await listening() as [number, number]
  // a worker without a channel outlives the primary's SIGKILL (process.ts teardown): end it here
  t.teardown(() => { if (alive(victim)) process.kill(victim, 'SIGKILL') })

  process.kill(victim, 'SIGUSR2')
  await until('the worker to close its channel', () => gw.output().includes(`worker-closes-ipc: closed ${victim}`), PROCESS_WAIT_MS)
  t.ok(alive(victim), 'the worker is alive with its channel closed')

  // scrapes and a reload while the worker lives without a channel: each one made the primary
  // send to it; the first killed the primary
  const answers: Array<{ what: string, got: Res | string }> = []
  for (let i = 0; i < 3; i++) {
    answers.push({ what: 'readyz', got: await send(`${gw.adminUrl}/readyz`) })
    answers.push({ what: 'metrics', got: await send(`${gw.adminUrl}/metrics`) })
  }
  const victimStillAlive = alive(victim)
  const exitedEarly = await Promise.race([gw.exited.then(e => e), new Promise<undefined>(resolve => setImmediate(resolve, undefined))])
  t.equal(exitedEarly, undefined, `the primary is still running (output: ${exitedEarly === undefined ? '' : gw.output().slice(-1500)})`)
  t.same(answers.map(a => typeof a.got === 'string' ? `${a.what} ${a.got}` : `${a.what} answered`), answers.map(a => `${a.what} answered`), 'every scrape is answered')
  t.ok(victimStillAlive, 'while the worker without a channel was still alive (the window was open throughout)')
  const ready = answers[0]?.got ?? 'none'
  t.ok(typeof ready !== 'string' && JSON.parse(ready.body).checks.find((c: { name: string }) => c.name === 'workers')?.detail?.pids?.includes(other) === true, 'the other worker answers /readyz')
  if (exitedEarly !== undefined) return

  // the primary drains the worker it cannot reach and, since it ignores SIGTERM, kills it
  await until('the worker without a channel to be killed', () => !alive(victim), SHUTDOWN_TIMEOUT_MS + DRAIN_GRACE_MS + PROCESS_WAIT_MS)
  const pids = await until('two workers again', async () => { const now = await listening(); return now.length === 2 && !now.includes(victim) }, PROCESS_WAIT_MS).then(() => listening())
  t.ok(pids.includes(other), 'the other worker served throughout')
  const after = await send(`${gw.adminUrl}/readyz`)
  t.equal(typeof after === 'string' ? after : after.status, 200, '/readyz 200 with the replacement')
  t.notMatch(gw.output(), /ERR_IPC_CHANNEL_CLOSED[\s\S]*Unhandled|Unhandled 'error' event/, 'no unhandled error')

  // the log lines come at exit (the log is buffered)
  process.kill(gw.pid, 'SIGTERM')
  const exit = await gw.exited
  t.equal(exit.code, 0, 'the primary drains and exits 0')
  // (several processes write to one pipe: a line cut by another's write is skipped)
  const lines = gw.output().split('\n').flatMap(l => { try { return [JSON.parse(l) as { event?: string, pid?: number, signal?: string }] } catch { return [] } })
  t.ok(lines.some(l => l.event === 'worker_killed' && l.pid === victim), 'the kill is logged (worker_killed)')
  t.ok(lines.some(l => l.event === 'worker_died' && l.pid === victim && l.signal === 'SIGKILL'), 'and the replacement (worker_died, SIGKILL)')
})
