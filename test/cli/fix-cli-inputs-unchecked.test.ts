import t, { type Test } from 'tap'
import { execFile, spawn } from 'node:child_process'
import { chmodSync, existsSync, lstatSync, mkdirSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { baseConfig, makeKey, raw } from '../fixtures/gateway.js'
import { ROOT, startGatewayProcess } from '../fixtures/process.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'

// Two CLI commands took their arguments unchecked.
//
// `portcullis reload --pid P` did `process.kill(Number(P), 'SIGHUP')`: `--pid ""` (an empty
// pid file) became 0, which kill(2) reads as the caller's process group, and hung up every
// process in it; `-1` would hang up every process the caller may signal; `abc` crashed with a
// TypeError; any PID was signalled, gateway or not. Now P is a decimal number of 2 or more
// whose /proc/P/cmdline is a `portcullis start`, else one line and exit 2.
//
// `portcullis keys generate --kid K --out DIR` wrote `DIR/K.pem` with K as given: `../../x`
// wrote outside DIR, a 100-character kid was written though the config refuses it (over 64),
// an existing `K.pub.pem` failed the command after `K.pem` was written (the orphan then
// failed every retry), and a world-writable DIR was used. Now the kid follows the config's
// rule (config/schema.ts KID_PATTERN) and a group- or world-writable DIR is refused, each
// with exit 2, and the pair is written all or nothing and never over anything (a file there
// is exit 1, EEXIST, as before).
//
// Every case that could signal a process runs in a process group of its own (a detached
// harness), and a dangerous PID (1, -1, 7…) is only ever given to the check, never to the CLI:
// a check that failed must not hang up the machine the tests run on.

interface Run { code: number | null, signal: string | null, stdout: string, stderr: string }

const HARNESS = `
const { spawn, execFile } = require('node:child_process')
let hangups = 0
process.on('SIGHUP', () => { hangups++ })
const sleeper = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], { stdio: 'ignore' })
const sleeperExit = new Promise(resolve => sleeper.once('exit', (code, signal) => resolve(signal)))
const args = JSON.parse(process.argv[1]).map(a => a === 'SLEEPER' ? String(sleeper.pid) : a)
execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
  // a SIGHUP the CLI sent is pending on the sleeper already (kill(2) returned before the CLI
  // exited); of two pending signals Linux delivers the lower, so SIGHUP (1) beats SIGTERM (15)
  sleeper.kill('SIGTERM')
  sleeperExit.then(signal => {
    process.stdout.write(JSON.stringify({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : null, signal: err?.signal ?? null, stdout, stderr, sleeper: signal, hangups }))
  })
})
`

/** the CLI beside a harmless node process, both in a new process group (setsid) with the harness */
function inOwnGroup (args: string[]): Promise<Run & { sleeper: string | null, hangups: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['-e', HARNESS, JSON.stringify(args)], { cwd: ROOT, detached: true, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    const timer = setTimeout(() => { try { process.kill(child.pid as number, 'SIGKILL') } catch {} }, PROCESS_WAIT_MS)
    child.once('exit', () => {
      clearTimeout(timer)
      try { resolve(JSON.parse(out)) } catch (err) { reject(new Error(`harness: ${out}`, { cause: err })) }
    })
  })
}

function cli (args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string, signal?: string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, signal: e?.signal ?? null, stdout, stderr })
    })
  })
}

type GatewayPid = (text: string, procDir?: string) => { pid: number } | { refused: string }
/** the check on its own, for PIDs no test may hand to a CLI that might not check (undefined before the fix) */
async function pidCheck (): Promise<GatewayPid | undefined> {
  const cli = await import('../../src/cli.js') as { gatewayPid?: GatewayPid }
  return cli.gatewayPid
}

function oneLine (t: Test, run: Run, code: number, pattern: RegExp, what: string): void {
  t.equal(run.code, code, `${what}: exit ${code} (stderr: ${run.stderr.trimEnd()})`)
  t.equal(run.stdout, '', `${what}: nothing on stdout`)
  t.notMatch(run.stderr, /TypeError|ERR_INVALID_ARG|at .*\.[jt]s:\d+/, `${what}: no crash, no stack`)
  t.equal(run.stderr.trimEnd().split('\n').length, 1, `${what}: one line`)
  t.match(run.stderr, pattern, `${what}: says why`)
}

t.test('fix-cli-inputs-unchecked: reload --pid refuses what is not a PID, in one line, signalling nothing', async (t) => {
  const rows: Array<{ pid: string, why: RegExp }> = [
    { pid: '', why: /--pid "" is not a process id/ },
    { pid: '0', why: /--pid "0" is not a process id/ },
    { pid: 'abc', why: /--pid "abc" is not a process id/ },
    { pid: '1.5', why: /--pid "1\.5" is not a process id/ },
  ]
  for (const row of rows) {
    const run = await inOwnGroup(['reload', '--pid', row.pid])
    oneLine(t, run, 2, row.why, `--pid ${JSON.stringify(row.pid)}`)
    t.equal(run.sleeper, 'SIGTERM', `--pid ${JSON.stringify(row.pid)}: a process in the caller's group is not hung up`)
    t.equal(run.hangups, 0, `--pid ${JSON.stringify(row.pid)}: nor is the caller's parent`)
  }
})

t.test('fix-cli-inputs-unchecked: reload --pid of a process that is not a gateway is refused and not signalled', async (t) => {
  const run = await inOwnGroup(['reload', '--pid', 'SLEEPER'])
  oneLine(t, run, 2, /process \d+ \("node"\) is not a portcullis gateway \(`portcullis start`\), not signalled/, 'a node process running something else')
  t.notMatch(run.stderr, /setInterval/, 'its command line is not printed (it can hold another program\'s secrets)')
  t.equal(run.sleeper, 'SIGTERM', 'it was not hung up')
})

t.test('fix-cli-inputs-unchecked: the PID check refuses groups, init, odd spellings and what /proc cannot confirm', async (t) => {
  const check = await pidCheck()
  t.type(check, 'function', 'gatewayPid is the check reload --pid runs')
  const refused = (text: string, procDir?: string): string => {
    const r = check?.(text, procDir)
    return r !== undefined && 'refused' in r ? r.refused : ''
  }
  // each of these would be a process group, every process, init, or another number than typed
  for (const text of ['-1', '-2', '1', '+5', ' 12', '12 ', '007', '0x10', '1e3', '١٢', '99999999999', '2147483648']) {
    t.match(refused(text), /is not a process id|is the init process/, `--pid ${JSON.stringify(text)} is refused`)
  }
  t.match(refused('1'), /docker kill --signal HUP, or the admin API/, 'PID 1: how to reload a gateway that is PID 1 of a container')
  t.match(refused(String(process.pid)), /is not a portcullis gateway|is this command itself/, 'this test process (node running tap) is not a gateway')
  t.match(refused('2147483647'), /^no process 2147483647$/, 'a PID with no process')
  t.match(refused('12345', join(ROOT, 'no-such-proc')), /cannot confirm that \d+ is a portcullis gateway without .*kill -HUP \d+.*admin API/, 'no /proc: refused, with the way round it')
})

t.test('fix-cli-inputs-unchecked: reload --pid of a running gateway sends SIGHUP and it reloads', async (t) => {
  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'health', prefix: '/health', upstream: 'http://127.0.0.1:9', auth: 'public' }], { logging: { level: 'info', decisions: false } })
  const gw = await startGatewayProcess(t, { config, key, name: 'reload-pid' })
  const check = await pidCheck()
  t.same(check?.(String(gw.pid)), { pid: gw.pid }, 'a `portcullis start` is confirmed by its command line')

  t.equal((await raw(gw.url, '/orders/1')).status, 404, 'no route /orders yet')
  writeFileSync(gw.configFile, stringify({
    ...config,
    server: { ...config.server, port: gw.port },
    admin: { ...config.admin, port: gw.adminPort },
    routes: [...config.routes, { name: 'orders', prefix: '/orders', upstream: 'http://127.0.0.1:9', auth: 'public' }],
  }))
  const run = await cli(['reload', '--pid', String(gw.pid)])
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`)
  t.equal(run.stdout, `sent SIGHUP to ${gw.pid}; the gateway logs the outcome\n`)
  await until('the reloaded route', async () => (await raw(gw.url, '/orders/1')).status !== 404, 10_000)
  t.pass('the gateway reloaded: /orders is routed')
  t.equal(gw.child.exitCode, null, 'and it is still running')
})

/** a new directory in `base`, of `mode` whatever the umask */
function keyDir (base: string, name: string, mode = 0o700): string {
  const dir = join(base, name)
  mkdirSync(dir)
  chmodSync(dir, mode)
  return dir
}

t.test('fix-cli-inputs-unchecked: keys generate takes only the kids the config accepts', async (t) => {
  const root = keyDir(t.testdir({}), 'root')
  const out = join(root, 'a', 'out')
  mkdirSync(out, { recursive: true, mode: 0o700 })
  chmodSync(join(root, 'a'), 0o700)
  chmodSync(out, 0o700)
  const escape = await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', '../../escaped', '--out', out])
  oneLine(t, escape, 2, /--kid "\.\.\/\.\.\/escaped" is not a key id the configuration accepts/, '--kid ../../escaped')
  t.notOk(existsSync(join(root, 'escaped.pem')) || existsSync(join(root, 'escaped.pub.pem')), 'nothing written outside --out')

  const long = await cli(['keys', 'generate', '--alg', 'HS256', '--kid', 'k'.repeat(65), '--out', out])
  oneLine(t, long, 2, /is not a key id the configuration accepts \(1 to 64/, 'a 65-character kid')
  for (const kid of ['a/b', 'k 1', 'ké']) {
    oneLine(t, await cli(['keys', 'generate', '--alg', 'HS256', '--kid', kid, '--out', out]), 2, /is not a key id/, `--kid ${JSON.stringify(kid)}`)
  }
  t.same(readdirSync(out), [], 'nothing written for a refused kid')

  const longest = await cli(['keys', 'generate', '--alg', 'HS256', '--kid', 'k'.repeat(64), '--out', out])
  t.equal(longest.code, 0, `a 64-character kid is written (stderr: ${longest.stderr})`)
  t.same(readdirSync(out), [`${'k'.repeat(64)}.secret`])
})

t.test('fix-cli-inputs-unchecked: keys generate writes the pair all or nothing, never over anything', async (t) => {
  const base = t.testdir({})
  const out = keyDir(base, 'keys')
  const outside = join(base, 'planted-target')

  // the public half exists: refused before the private half is written, then the retry works
  writeFileSync(join(out, 'p1.pub.pem'), 'someone else\'s\n')
  const taken = await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', 'p1', '--out', out])
  oneLine(t, taken, 1, /^cannot write the key: .*p1\.pub\.pem exists \(EEXIST\): a key is never overwritten/, '<kid>.pub.pem exists')
  t.notOk(existsSync(join(out, 'p1.pem')), 'no private key left behind')
  rmSync(join(out, 'p1.pub.pem'))
  const retry = await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', 'p1', '--out', out])
  t.equal(retry.code, 0, `the retry writes the pair (stderr: ${retry.stderr})`)
  t.equal(statSync(join(out, 'p1.pem')).mode & 0o777, 0o600, 'the private key is 0600')
  t.equal(statSync(join(out, 'p1.pub.pem')).mode & 0o777, 0o644, 'the public key is 0644')

  // symlinks planted at either name, dangling into another directory: never followed
  for (const [kid, name] of [['s1', 's1.pem'], ['s2', 's2.pub.pem']] as const) {
    symlinkSync(outside, join(out, name))
    const run = await cli(['keys', 'generate', '--alg', 'ES256', '--kid', kid, '--out', out])
    oneLine(t, run, 1, new RegExp(`${name.replaceAll('.', '\\.')} exists \\(EEXIST\\)`), `a symlink at ${name}`)
    t.notOk(existsSync(outside), `${name}: the symlink's target was not created`)
    t.ok(lstatSync(join(out, name)).isSymbolicLink(), `${name}: the symlink is left as it was`)
  }
  t.notOk(existsSync(join(out, 's2.pem')), 'no private key beside the planted public name')

  // an HS256 secret the same
  writeFileSync(join(out, 'h1.secret'), 'old\n')
  oneLine(t, await cli(['keys', 'generate', '--alg', 'HS256', '--kid', 'h1', '--out', out]), 1, /h1\.secret exists \(EEXIST\)/, 'an existing secret')

  t.same(readdirSync(out).sort(), ['h1.secret', 'p1.pem', 'p1.pub.pem', 's1.pem', 's2.pub.pem'], 'no temporary file left, nothing else written')
})

t.test('fix-cli-inputs-unchecked: keys generate refuses a directory others may write to', { skip: process.platform === 'win32' && 'POSIX modes' }, async (t) => {
  const base = t.testdir({})
  for (const [mode, who] of [[0o777, 'every user'], [0o1777, 'every user'], [0o770, 'its group'], [0o720, 'its group']] as const) {
    const out = keyDir(base, `dir-${mode.toString(8)}`, mode)
    const run = await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', 'w1', '--out', out])
    oneLine(t, run, 2, new RegExp(`is writable by ${who} \\(mode ${(mode & 0o777).toString(8)}\\).*chmod go-w`), `--out of mode ${mode.toString(8)}`)
    t.same(readdirSync(out), [], `mode ${mode.toString(8)}: nothing written`)
  }
  const own = keyDir(base, 'own', 0o750)
  t.equal((await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', 'w1', '--out', own])).code, 0, 'a directory only its owner writes: written')
  const created = join(keyDir(base, 'parent'), 'new', 'deeper')
  t.equal((await cli(['keys', 'generate', '--alg', 'EdDSA', '--kid', 'w1', '--out', created])).code, 0, 'a new directory: created and written')
  t.equal(statSync(created).mode & 0o077, 0, 'the new directory is its owner\'s only')
})
