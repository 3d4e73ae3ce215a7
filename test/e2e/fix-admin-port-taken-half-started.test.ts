import t from 'tap'
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { createConnection, createServer, type AddressInfo, type Server } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { freePort, ROOT } from '../fixtures/process.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// Found by the benchmark (a port handed out twice): with the admin port already taken,
// `portcullis start` printed "listen EADDRINUSE" and went on running — the public listener
// up and proxying, no /readyz for the orchestrator, the store and feed open, exit code
// never set. A start that cannot bind every listener must stop whole and exit non-zero.

// a process that hangs instead of exiting fails all the same, only after the harness's wait
const EXIT_WITHIN_MS = PROCESS_WAIT_MS

async function holdPort (t: { teardown: (fn: () => unknown) => void }): Promise<number> {
  const server: Server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())))
  return (server.address() as AddressInfo).port
}

function refused (port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: '127.0.0.1', port })
    socket.once('connect', () => { socket.destroy(); resolve(false) })
    socket.once('error', () => { resolve(true) })
  })
}

/** runs `portcullis start` on `config`; resolves with its exit code and stderr, or undefined if it is still running after EXIT_WITHIN_MS (then it is killed) */
async function start (t: { teardown: (fn: () => unknown) => void }, config: Record<string, any>): Promise<{ code: number | null, stderr: string } | undefined> {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-halfstart-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify(config))
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'start', '-c', file], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (c: Buffer) => { stderr += c.toString() })
  const exited = new Promise<{ code: number | null, stderr: string }>((resolve) => child.once('exit', (code) => resolve({ code, stderr })))
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<undefined>((resolve) => { timer = setTimeout(() => resolve(undefined), EXIT_WITHIN_MS) })
  const outcome = await Promise.race([exited, late])
  clearTimeout(timer)
  if (outcome === undefined) { child.kill('SIGKILL'); await exited }
  return outcome
}

t.test('fix-admin-port-taken: one process stops whole and exits 1, its public port closed', async (t) => {
  const adminPort = await holdPort(t)
  const port = await freePort()
  const dataDir = mkdtempSync(join(tmpdir(), 'portcullis-halfstart-data-'))
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }))
  const config = baseConfig(makeKey('EdDSA'), [{ name: 'orders', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    server: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort },
  })
  config.database = { dataDir }
  const outcome = await start(t, config)
  t.not(outcome, undefined, 'the process exits by itself')
  t.equal(outcome?.code, 1)
  t.match(outcome?.stderr ?? '', /EADDRINUSE/, 'it says why')
  t.ok(await refused(port), 'nothing is left listening on the public port')
})

const avail = pgAvailability()
t.test('fix-admin-port-taken: the workers\' primary fails before forking any worker', { skip: avail.available ? false : avail.reason }, async (t) => {
  const pg = await startPostgres(t)
  const url = await pg.createDatabase('halfstart')
  const adminPort = await holdPort(t)
  const port = await freePort()
  const config = baseConfig(makeKey('EdDSA'), [{ name: 'orders', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    server: { host: '127.0.0.1', port, workers: 2 },
    admin: { host: '127.0.0.1', port: adminPort, token: 'admin-token-for-the-halfstart-suite-0123456789' },
  })
  config.database = { url }
  const outcome = await start(t, config)
  t.not(outcome, undefined, 'the primary exits by itself')
  t.equal(outcome?.code, 1)
  t.match(outcome?.stderr ?? '', /EADDRINUSE/)
  t.ok(await refused(port), 'no worker is left serving the public port')
})
