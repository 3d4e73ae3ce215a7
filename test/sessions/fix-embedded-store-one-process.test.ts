/**
 * Regression (fix-embedded-store-one-process): the README said that with the embedded store
 * "the CLI and a running gateway cannot open ./data at the same time", but nothing stopped
 * them. PGlite takes no lock: a second process opened the directory without an error, each
 * process then worked on its own copy of the database's pages, and which writes survived
 * depended on who wrote last (with PGlite alone: rows a second process wrote were gone once
 * the first closed; here, on the code before, `portcullis users add bob` beside the running
 * gateway succeeded). Now the first process to take DIR/portcullis.pid holds the directory;
 * everyone else is refused, saying who holds it. A lock left by a process that died is
 * taken over.
 *
 * Real processes throughout: the CLI and the gateway as an operator runs them, and holder
 * processes (test/fixtures/embedded-holder.ts) opening the directory through the real driver.
 */
import t from 'tap'
import { execFile, spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { LOCK_FILE } from '../../src/sessions/data-dir-lock.js'
import { createEmbeddedDriver } from '../../src/sessions/embedded-store.js'
import { makeKey } from '../fixtures/keys.js'
import { ROOT, startGatewayProcess } from '../fixtures/process.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'

const base = mkdtempSync(join(tmpdir(), 'portcullis-one-process-'))
t.teardown(() => rmSync(base, { recursive: true, force: true }))

interface Run { code: number | null, stdout: string, stderr: string }

function cli (args: string[], stdin = ''): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
        resolve({ code, stdout, stderr })
      })
    child.stdin?.end(stdin)
  })
}

interface Holder { child: ChildProcess, pid: number, output: () => string, exited: Promise<number | null> }

/** a process holding (or trying to hold) DIR; ends when its stdin ends */
function holder (dir: string): Holder {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/embedded-holder.ts', dir], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<number | null>(resolve => child.once('exit', (code) => resolve(code)))
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited }
  })
  return { child, pid: child.pid as number, output: () => out, exited }
}

async function rows (dir: string): Promise<string[]> {
  const driver = await createEmbeddedDriver({ dataDir: dir })
  try {
    return (await driver.query('select who from held', [])).map(r => String(r.who))
  } finally {
    await driver.close()
  }
}

t.test('the CLI is refused while the gateway runs on the directory, and nothing is lost', async (t) => {
  const dataDir = join(base, 'cli-data')
  const key = makeKey('EdDSA')
  const config = {
    database: { dataDir },
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: key.privatePem }] },
    routes: [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required', scopes: { '*': ['orders:read'] } }],
  }
  const file = join(base, 'cli-gateway.yaml')
  writeFileSync(file, stringify(config))

  const alice = await cli(['users', 'add', 'alice', '-c', file, '--scopes', 'orders:read', '--password-stdin'], 'pw-alice-1234\n')
  t.equal(alice.code, 0, `users add alice before the gateway starts (stderr: ${alice.stderr})`)
  t.notOk(existsSync(join(dataDir, LOCK_FILE)), 'the CLI gave the directory back when it was done')

  const gw = await startGatewayProcess(t, { config, key, name: 'one-process' })
  const bob = await cli(['users', 'add', 'bob', '-c', file, '--password-stdin'], 'pw-bob-12345\n')
  t.equal(bob.code, 1, 'users add beside the running gateway fails (it printed success before the fix)')
  t.match(bob.stderr, new RegExp(`in use by process ${gw.pid} .*stop it first, or use PostgreSQL`), 'and says which process holds the directory')
  const lock = existsSync(join(dataDir, LOCK_FILE)) ? JSON.parse(readFileSync(join(dataDir, LOCK_FILE), 'utf8')) as { pid: number } : undefined
  t.equal(lock?.pid, gw.pid, 'the running gateway holds the directory')

  const login = await fetch(`${gw.url}/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ username: 'alice', password: 'pw-alice-1234' }) })
  t.equal(login.status, 200, 'the gateway serves on: alice logs in')

  gw.child.kill('SIGTERM')
  const exit = await gw.exited
  t.equal(exit.code, 0, 'the gateway stops')
  t.notOk(existsSync(join(dataDir, LOCK_FILE)), 'and gives the directory back')

  const list = await cli(['users', 'list', '-c', file])
  t.equal(list.code, 0, `users list once the gateway is gone (stderr: ${list.stderr})`)
  t.match(list.stdout, /alice/, 'alice is there')
  t.notMatch(list.stdout, /bob/, 'bob was refused, not half added')
})

t.test('a second store in the same process is refused until the first closes', async (t) => {
  const dir = join(base, 'same-process')
  const first = await createEmbeddedDriver({ dataDir: dir })
  await t.rejects(createEmbeddedDriver({ dataDir: dir }), new RegExp(`in use by process ${process.pid} `))
  await first.close()
  const again = await createEmbeddedDriver({ dataDir: dir })
  t.pass('opens once the first closed')
  await again.close()
})

t.test('a lock left by a killed process is taken over, with what it wrote', async (t) => {
  const dir = join(base, 'killed')
  const h = holder(dir)
  await until('the holder is ready', () => h.output().includes('ready'), 60_000)
  h.child.kill('SIGKILL')
  await h.exited
  const left = JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid: number }
  t.equal(left.pid, h.pid, 'SIGKILL left the lock behind')
  t.same(await rows(dir), [String(h.pid)], 'the next process opens the directory and finds the row the killed one wrote')
  t.notOk(existsSync(join(dir, LOCK_FILE)), 'and gives it back when it closes')
})

t.test('a lock written on another host is never taken over', async (t) => {
  const dir = join(base, 'other-host')
  mkdirSync(dir, { recursive: true })
  const foreign = JSON.stringify({ pid: 1, host: 'elsewhere.example' }) + '\n'
  writeFileSync(join(dir, LOCK_FILE), foreign)
  await t.rejects(createEmbeddedDriver({ dataDir: dir }), /in use by process 1 on host elsewhere\.example .*if that process is gone, delete /)
  t.equal(readFileSync(join(dir, LOCK_FILE), 'utf8'), foreign, 'the lock is left as it was')
})

t.test('two first starts on a new directory: one creates it, the other is refused', async (t) => {
  const dir = join(base, 'race')
  const a = holder(dir)
  const b = holder(dir)
  await until('both have an outcome', () => [a, b].every(h => /ready|refused/.test(h.output())), 90_000)
  const winners = [a, b].filter(h => h.output().includes('ready'))
  const losers = [a, b].filter(h => h.output().includes('refused'))
  t.equal(winners.length, 1, 'exactly one opens the directory')
  t.equal(losers.length, 1, 'the other is refused')
  t.match(losers[0]?.output(), new RegExp(`in use by process ${winners[0]?.pid ?? -1} `), 'naming the winner')
  t.equal(await losers[0]?.exited, 3, 'and exits without having written anything')
  winners[0]?.child.stdin?.end()
  t.equal(await winners[0]?.exited, 0, 'the winner closes')
  t.same(await rows(dir), [String(winners[0]?.pid)], 'one cluster, with the winner\'s row alone')
})
