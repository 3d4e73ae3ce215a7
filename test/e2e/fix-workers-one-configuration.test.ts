import t from 'tap'
import { readFileSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { parse, stringify } from 'yaml'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startGatewayProcess } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// With `server.workers`, the primary validated gateway.yaml and then told each worker to read
// the file again, and a worker replaced after a crash read it at start: a worker could serve
// a file nobody reloaded (edited since, or broken — then the replacement crash-looped), and a
// reload some workers took and others did not left the fleet split, with the primary
// reporting the old hash. Now the primary is the only reader: workers start on, and reload to,
// the configuration it hands them; a reload a worker does not confirm is undone everywhere.
// Real processes (node:cluster), real PostgreSQL, real signals.

const ADMIN_TOKEN = 'admin-token-for-the-workers-config-suite-0123'
const avail = pgAvailability()

interface Res { status: number, body: string }

/** one request on a fresh connection (the primary hands each to the next worker) */
function send (url: string, options: { method?: string, headers?: Record<string, string>, timeoutMs?: number } = {}): Promise<Res> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { method: options.method ?? 'GET', headers: options.headers, agent: false, rejectUnauthorized: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.setTimeout(options.timeoutMs ?? 5000, () => { req.destroy(Object.assign(new Error('timed out'), { code: 'TIMEOUT' })) })
    req.on('error', reject)
    req.end()
  })
}

const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('workers run the configuration the primary holds', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const url = await pg.createDatabase('workers_config')
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const route = (name: string): Record<string, unknown> => ({ name, prefix: `/${name}`, upstream: upstream.url, auth: 'public' })
  const config = baseConfig(key, [route('old')], { server: { workers: 2 }, admin: { token: ADMIN_TOKEN } })
  config.database = { url }
  const gw = await startGatewayProcess(t, { config, key, name: 'workers-config' })
  // the file as started (with the ports the test harness chose), to derive the edits from
  const started = parse(readFileSync(gw.configFile, 'utf8')) as Record<string, any>
  const withRoutes = (...names: string[]): string => stringify({ ...started, routes: names.map(route) })

  const listening = async (): Promise<number[]> => (JSON.parse((await send(`${gw.adminUrl}/admin/workers`)).body).workers as Array<{ pid: number, listening: boolean }>).filter(w => w.listening).map(w => w.pid)
  const twoListening = async (without?: number): Promise<number[]> => {
    for (let i = 0; i < PROCESS_WAIT_MS / 100; i++) {
      const pids = await listening()
      if (pids.length === 2 && (without === undefined || !pids.includes(without))) return pids
      await sleep(100)
    }
    throw new Error('two workers did not come back')
  }
  /** statuses of `path` over 8 fresh connections: the primary spreads them over both workers */
  const statuses = async (path: string): Promise<number[]> => [...new Set(await Promise.all(Array.from({ length: 8 }, async () => (await send(`${gw.url}${path}`)).status)))]
  const reload = async (): Promise<Res> => await send(`${gw.adminUrl}/admin/reload`, { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` }, timeoutMs: 20_000 })

  let pids = await twoListening()
  t.same(await statuses('/old/x'), [200], 'both workers serve the route')

  t.test('a worker replaced after the file was edited (not reloaded) starts on the configuration in force', async (t) => {
    writeFileSync(gw.configFile, withRoutes('edited'))
    process.kill(pids[0]!, 'SIGKILL')
    pids = await twoListening(pids[0])
    t.same(await statuses('/old/x'), [200], 'every worker still serves the route in force')
    t.same(await statuses('/edited/x'), [404], 'no worker serves the unreloaded edit')
  })

  t.test('a worker replaced while the file is broken starts too (no crash loop)', async (t) => {
    writeFileSync(gw.configFile, 'routes: [unclosed')
    process.kill(pids[1]!, 'SIGKILL')
    pids = await twoListening(pids[1])
    t.equal(pids.length, 2, 'two workers listen')
    t.same(await statuses('/old/x'), [200])
  })

  t.test('a reload reaches every worker with what the primary loaded', async (t) => {
    writeFileSync(gw.configFile, withRoutes('old', 'added'))
    const res = await reload()
    t.equal(res.status, 200, res.body)
    t.same(await statuses('/added/x'), [200], 'every worker serves the new route')
  })

  t.test('a SIGHUP sent to a worker does not end it', async (t) => {
    process.kill(pids[0]!, 'SIGHUP')
    await sleep(500)
    t.ok((await listening()).includes(pids[0]!), 'the worker is still there')
  })

  t.test('a reload one worker does not confirm is undone everywhere; that worker is replaced', async (t) => {
    const before = JSON.parse((await send(`${gw.adminUrl}/readyz`)).body)
    t.equal(before.status, 'ready')
    const [stopped, other] = pids as [number, number]
    writeFileSync(gw.configFile, withRoutes('old', 'added', 'late'))
    // a worker that cannot answer (stopped) for the whole reload
    process.kill(stopped, 'SIGSTOP')
    let res: Res
    try {
      res = await reload()
    } finally {
      process.kill(stopped, 'SIGCONT')
    }
    t.equal(res.status, 422, 'the reload is reported as failed')
    t.match(JSON.parse(res.body).problems, [{ message: /did not answer/ }])
    pids = await twoListening(stopped)
    t.ok(pids.includes(other), 'the worker that answered stays (switched back)')
    t.same(await statuses('/late/x'), [404], 'no worker serves the configuration that was not confirmed')
    t.same(await statuses('/added/x'), [200], 'every worker serves the one in force')
  })

  t.test('the next reload applies it everywhere', async (t) => {
    const res = await reload()
    t.equal(res.status, 200, res.body)
    t.same(await statuses('/late/x'), [200])
  })

  t.test('the replacements are counted', async (t) => {
    const metrics = (await send(`${gw.adminUrl}/metrics`)).body
    const count = Number(/^portcullis_worker_restarts_total (\d+)/m.exec(metrics)?.[1])
    // two SIGKILLed workers, one drained after the unconfirmed reload
    t.ok(count >= 3, `portcullis_worker_restarts_total ${count} (it stayed 0: fork's parameter shadowed the counter)`)
  })
})
