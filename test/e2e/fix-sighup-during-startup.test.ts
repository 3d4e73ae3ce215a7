import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { baseConfig, makeKey, PUBLIC_SCHEME, raw } from '../fixtures/gateway.js'
import { freePort, ROOT, type Exit } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { startUpstream } from '../fixtures/upstream.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'

// A SIGHUP (reload) while `portcullis start` was starting ended the gateway — status 129,
// nothing logged — because the handler was installed only at the end of listen(), and a
// start takes 1–5 s (loading the modules alone ~0.8 s). Workers ignored SIGHUP only from
// serveAsWorker on, so a signal to the process group ended the workers still starting. Now
// the signal is held first thing: a SIGHUP while starting is remembered and, once the
// gateway listens, one reload runs (the file may have changed meanwhile) and is logged.

const ADMIN_TOKEN = 'admin-token-for-the-sighup-suite-0123456789'
const avail = pgAvailability()

function get (url: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, timeout: 2000 }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('timeout', () => req.destroy(new Error('timed out')))
    req.on('error', reject)
    req.end()
  })
}

/** whether the process has a handler for SIGHUP (Linux: bit 0 of SigCgt in /proc/PID/status) */
function catchesSighup (pid: number): boolean {
  try {
    const mask = /^SigCgt:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
    return mask !== undefined && (BigInt(`0x${mask}`) & 1n) === 1n
  } catch {
    return false
  }
}

/**
 * Waits until `pid` handles SIGHUP, at most `capMs`: the Node binary's own start (before any
 * of the gateway's code runs) is a window no program can close, so the signal is sent once the
 * gateway could have installed its handler. Before the fix it never did while starting; the
 * cap keeps the signal inside the start then.
 */
async function whenSighupCouldBeHandled (pid: number, capMs: number): Promise<void> {
  await until('SIGHUP handled', () => catchesSighup(pid), capMs).catch(() => {})
}

interface Started { pid: number, adminUrl: string, url: string, file: string, output: () => string, exited: Promise<Exit>, alive: () => boolean }

/** `portcullis start` as a child, not waited for: the test signals it while it starts */
async function spawnGateway (t: Test, config: Record<string, any>, options: { group?: boolean } = {}): Promise<Started> {
  const port = await freePort()
  const adminPort = await freePort()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-sighup-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'gateway.yaml')
  const full = { ...config, server: { ...config.server, port }, admin: { ...config.admin, port: adminPort } }
  writeFileSync(file, stringify(full))
  // a process group of its own when the test signals the group (the primary and its workers).
  // `env -u NODE_OPTIONS` execs node (same PID) without what tap's process tracking puts back
  // into NODE_OPTIONS on every spawn: its signal-exit handler re-raises a SIGHUP that no one
  // else handles, which would end the child before the gateway's code runs
  const child = spawn('env', ['-u', 'NODE_OPTIONS', process.execPath, '--import', 'tsx', 'src/cli.ts', 'start', '-c', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: options.group === true, env: { ...process.env, NODE_OPTIONS: '' } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  let running = true
  const exited = new Promise<Exit>(resolve => child.once('exit', (code, signal) => { running = false; resolve({ code, signal, at: Date.now() }) }))
  const pid = child.pid!
  t.teardown(async () => {
    if (!running) return
    // SIGTERM drains the gateway (a primary stops its workers first), by its PID
    process.kill(pid, 'SIGTERM')
    const late = setTimeout(() => { try { process.kill(options.group === true ? -pid : pid, 'SIGKILL') } catch {} }, 15_000)
    await exited
    clearTimeout(late)
  })
  return { pid, adminUrl: `http://127.0.0.1:${adminPort}`, url: `${PUBLIC_SCHEME}://127.0.0.1:${port}`, file, output: () => out, exited, alive: () => running }
}

/** the admin port is not listening yet: the gateway is still starting */
async function stillStarting (adminUrl: string): Promise<boolean> {
  return await get(`${adminUrl}/livez`).then(() => false, (err: NodeJS.ErrnoException) => err.code === 'ECONNREFUSED')
}

/** true once ready, false if it ended first */
async function readyOrExit (gw: Started): Promise<boolean> {
  await until('ready', async () => !gw.alive() || (await get(`${gw.adminUrl}/readyz`).then(r => r.status === 200, () => false)), PROCESS_WAIT_MS)
  return gw.alive()
}

t.test('fix-sighup-during-startup', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const orders = { name: 'orders', prefix: '/api/orders', upstream: upstream.url, auth: 'required' }
  const items = { name: 'items', prefix: '/api/items', upstream: upstream.url, auth: 'public' }

  t.test('fix-sighup-during-startup: a SIGHUP while the gateway starts is remembered, and reloads once it listens', async (t) => {
    const config = baseConfig(key, [orders], { admin: { token: ADMIN_TOKEN }, logging: { level: 'info' } })
    config.database = { url: await pg.createDatabase('sighup_single') }
    const gw = await spawnGateway(t, config)
    await whenSighupCouldBeHandled(gw.pid, 1500)
    // the file changes while the gateway starts; the signal says so
    writeFileSync(gw.file, stringify({ ...baseConfig(key, [orders, items], { admin: { token: ADMIN_TOKEN }, logging: { level: 'info' } }), database: config.database, server: { ...config.server, port: Number(new URL(gw.url).port) }, admin: { token: ADMIN_TOKEN, host: '127.0.0.1', port: Number(new URL(gw.adminUrl).port) } }))
    t.ok(await stillStarting(gw.adminUrl), 'the gateway is still starting when the signal is sent')
    process.kill(gw.pid, 'SIGHUP')
    t.ok(await readyOrExit(gw), 'the gateway is not ended by it, and becomes ready')
    if (!gw.alive()) {
      t.comment(`ended: ${JSON.stringify(await gw.exited)}\n${gw.output().slice(-2000)}`)
      return
    }
    await until('the changed file in force', async () => (await raw(gw.url, '/api/items/1')).status === 200, 10_000).catch(() => {})
    t.equal((await raw(gw.url, '/api/items/1')).status, 200, 'the file as it is now is in force')
    await until('the lines logged', () => gw.output().includes('"event":"config_reloaded"'), 5000).catch(() => {})
    const lines = gw.output().split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { msg: string, event?: string, signal?: string })
    const listening = lines.findIndex(l => l.msg === 'portcullis listening')
    const remembered = lines.findIndex(l => l.signal === 'SIGHUP' && /while the gateway was starting/.test(l.msg))
    t.ok(listening >= 0 && remembered > listening, 'logged, once the gateway listens: the SIGHUP that came while it started')
    t.equal(lines.filter(l => l.event === 'config_reloaded').length, 1, 'one reload ran, and is logged as the security event config_reloaded')
  })

  t.test('fix-sighup-during-startup: a SIGHUP to a primary still starting is remembered, and reloads the fleet once it listens', async (t) => {
    const config = baseConfig(key, [orders], { server: { workers: 2 }, admin: { token: ADMIN_TOKEN }, logging: { level: 'info' } })
    config.database = { url: await pg.createDatabase('sighup_primary') }
    const gw = await spawnGateway(t, config)
    await whenSighupCouldBeHandled(gw.pid, 1500)
    t.ok(await stillStarting(gw.adminUrl), 'the primary is still starting when the signal is sent')
    process.kill(gw.pid, 'SIGHUP')
    t.ok(await readyOrExit(gw), 'the primary is not ended by it, and the fleet becomes ready')
    if (!gw.alive()) {
      t.comment(`ended: ${JSON.stringify(await gw.exited)}\n${gw.output().slice(-2000)}`)
      return
    }
    await until('the primary\'s line', () => /"event":"config_reloaded"[^\n]*"workers"/.test(gw.output()), 5000).catch(() => {})
    t.match(gw.output(), new RegExp(`"pid":${gw.pid}[^\\n]*"signal":"SIGHUP"[^\\n]*while the gateway was starting`), 'the primary logs the SIGHUP it got while starting')
    t.equal(gw.output().split('\n').filter(l => l.includes('configuration reloaded in every worker')).length, 1, 'and reloads the fleet once')
  })

  t.test('fix-sighup-during-startup: a SIGHUP to the process group while workers start ends none of them', async (t) => {
    const config = baseConfig(key, [orders], { server: { workers: 2 }, admin: { token: ADMIN_TOKEN }, logging: { level: 'info' } })
    config.database = { url: await pg.createDatabase('sighup_workers') }
    const gw = await spawnGateway(t, config, { group: true })
    let starting: Array<{ pid: number, listening: boolean }> = []
    await until('two workers starting', async () => {
      if (!gw.alive()) return true
      starting = await get(`${gw.adminUrl}/admin/workers`).then(r => (JSON.parse(r.body) as { workers: typeof starting }).workers, () => [])
      return starting.length === 2
    }, PROCESS_WAIT_MS)
    t.equal(starting.length, 2, 'two workers forked')
    await Promise.all(starting.map(async w => await whenSighupCouldBeHandled(w.pid, 3000)))
    const workers = await get(`${gw.adminUrl}/admin/workers`).then(r => (JSON.parse(r.body) as { workers: typeof starting }).workers)
    t.ok(workers.every(w => !w.listening), 'neither worker listens yet when the group is signalled')
    process.kill(-gw.pid, 'SIGHUP')
    t.ok(await readyOrExit(gw), 'the fleet becomes ready')
    const after = await get(`${gw.adminUrl}/admin/workers`).then(r => (JSON.parse(r.body) as { workers: typeof starting }).workers)
    t.same(after.map(w => w.pid).sort(), starting.map(w => w.pid).sort(), 'the workers that were starting are the ones serving: none was ended and replaced')
    t.notMatch(gw.output(), /"event":"worker_died"/, 'no worker died')
    t.match((await get(`${gw.adminUrl}/metrics`)).body, /^portcullis_worker_restarts_total 0$/m, 'no restart counted')
  })
})
