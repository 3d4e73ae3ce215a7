/**
 * fix-pid1-ignores-sigterm-while-starting (a stop 43 review of the image and manifests): the
 * image's entrypoint runs node itself, so the gateway is PID 1 of its container, and PID 1 is
 * not ended by a signal it has no handler for. The gateway installed its SIGTERM handler only
 * once it listened: a replica still starting — waiting on a stalled PostgreSQL, or on the
 * migration lock behind another replica — ignored the kubelet's SIGTERM until the SIGKILL
 * (reproduced: SIGTERM at 2 s, exit only at the store's own timeout, 6.6 s later). Until it
 * listens, SIGTERM and SIGINT now end it at once; once it listens they drain it, as before.
 *
 * Real processes: the gateway as PID 1 of a new PID namespace (`unshare -pf`, as root), a
 * "PostgreSQL" that accepts connections and never answers.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { readFileSync, writeFileSync } from 'node:fs'
import { createServer, type AddressInfo, type Socket } from 'node:net'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { freePort, ROOT } from '../fixtures/process.js'
import { until } from '../fixtures/until.js'

// a new PID namespace needs root (CAP_SYS_ADMIN); the CI runs as root
const canUnshare = spawnSync('unshare', ['-pf', '--mount-proc', 'true']).status === 0
const skip = canUnshare ? false : 'unshare -pf is not permitted here (needs root): no PID 1 to test'

/** `portcullis start` as PID 1 of a new PID namespace; its pid as the host sees it */
async function startAsPid1 (t: Test, config: Record<string, any>): Promise<{ hostPid: number, exited: Promise<{ code: number | null, atMs: number }>, output: () => string }> {
  const file = join(t.testdir({}), 'gateway.yaml')
  writeFileSync(file, stringify(config))
  const child = spawn('unshare', ['-pf', '--mount-proc', process.execPath, '--import', 'tsx', 'src/cli.ts', 'start', '-c', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<{ code: number | null, atMs: number }>(resolve => child.once('exit', (code) => resolve({ code, atMs: performance.now() })))
  t.teardown(() => { try { process.kill(child.pid!, 'SIGKILL') } catch {} })
  // unshare forks node into the namespace: its one child
  let hostPid = 0
  await until('node started in the namespace', () => {
    const children = readFileSync(`/proc/${child.pid!}/task/${child.pid!}/children`, 'utf8').trim()
    hostPid = Number(children.split(' ')[0])
    return hostPid > 0
  })
  t.teardown(() => { try { process.kill(hostPid, 'SIGKILL') } catch {} })
  return { hostPid, exited, output: () => out }
}

t.test('as PID 1, a SIGTERM while the store does not answer ends the gateway at once', { skip }, async t => {
  // accepts, never answers: the store's open waits (its own timeout is several seconds)
  const sockets = new Set<Socket>()
  const stalled = createServer((s) => { sockets.add(s); s.on('error', () => {}) })
  await new Promise<void>(resolve => stalled.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); stalled.close() })
  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    server: { port: await freePort() },
    admin: { port: await freePort() },
    database: { url: `postgres://portcullis@127.0.0.1:${(stalled.address() as AddressInfo).port}/portcullis` },
  })
  const gw = await startAsPid1(t, config)
  // it is waiting on the store: its handlers are in place long before (the first thing start does)
  await until('the gateway connects to the stalled store', () => sockets.size > 0, 15_000)
  const sentAt = performance.now()
  process.kill(gw.hostPid, 'SIGTERM')
  const exit = await Promise.race([gw.exited, new Promise<undefined>(resolve => setTimeout(() => { resolve(undefined) }, 3_000).unref())])
  t.ok(exit !== undefined, `exited within 3 s of SIGTERM${exit === undefined ? '' : ` (${Math.round(exit.atMs - sentAt)} ms)`} (output: ${gw.output().slice(0, 300)})`)
  t.equal(exit?.code, 143, 'exit status 143 (128 + SIGTERM), as the default action reports it')
})

t.test('as PID 1, once it listens a SIGTERM drains it (exit 0), the early stop handed over', { skip }, async t => {
  const key = makeKey('EdDSA')
  const port = await freePort()
  const adminPort = await freePort()
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    server: { port },
    admin: { port: adminPort },
    database: { dataDir: 'memory://' },
    logging: { level: 'info' },
  })
  const gw = await startAsPid1(t, config)
  await until('the gateway is ready', async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`).then(r => r.status, () => 0)) === 200, 20_000)
  process.kill(gw.hostPid, 'SIGTERM')
  const exit = await Promise.race([gw.exited, new Promise<undefined>(resolve => setTimeout(() => { resolve(undefined) }, 10_000).unref())])
  t.equal(exit?.code, 0, `drained and exited 0 (output: ${gw.output().slice(-300)})`)
  t.match(gw.output(), /draining/, 'it drained')
})
