/**
 * Regression (fix-embedded-lock-takeover-race): a lock on an embedded data directory left by
 * a process that died is taken over (fix-embedded-store-one-process). Two processes could
 * find the same dead holder's lock at once; each unlinked "the stale lock" and created its
 * own, so the second one's unlink removed the first one's new lock, and both held the
 * directory — the data loss the lock exists to prevent. Now a stale lock is moved aside
 * (atomic rename), compared with what was judged stale, and put back if it is another
 * process's new lock: exactly one holds the directory.
 *
 * Regression (fix-lock-takeover-three-takers): that move aside and back had a window of its
 * own. A taker that judged a lock stale moved away the lock a second taker had just created;
 * a third created its own before it was put back, and the second and third both held the
 * directory (CI saw it: two of four real processes held one). Now no file is moved away from
 * the lock's name: of the takers that judged one file stale, the one whose claim on that
 * file (a hard link under a name only it has) succeeds removes it, and only while it is
 * still that file.
 *
 * The subtests before the last make the interleavings happen deterministically: `acquire`'s
 * seam runs a second taker between the first one's judging the lock stale and its claiming
 * it, and the three-taker one runs a third right after the first taker's first change to the
 * directory, by wrapping node:fs's own functions (every call is the real one on real files;
 * only when the third runs is arranged: the window is microseconds wide). The last starts
 * real processes on one stale lock within the same millisecond.
 */
import t from 'tap'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import fs, { linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs'
import { syncBuiltinESMExports } from 'node:module'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { claimPath, DataDirLock, LOCK_FILE } from '../../src/sessions/data-dir-lock.js'
import { ROOT } from '../fixtures/process.js'
import { until } from '../fixtures/until.js'

const base = mkdtempSync(join(tmpdir(), 'portcullis-takeover-'))
t.teardown(() => rmSync(base, { recursive: true, force: true }))

// a pid that was a process on this host and is gone (reused within the test only by chance)
const dead = spawnSync(process.execPath, ['-e', '0']).pid as number

function staleDir (name: string, content = JSON.stringify({ pid: dead, host: hostname() }) + '\n'): string {
  const dir = join(base, name)
  rmSync(dir, { recursive: true, force: true })
  mkdirSync(dir, { recursive: true })
  writeFileSync(join(dir, LOCK_FILE), content)
  return dir
}

const lockOf = (dir: string): { pid?: number, nonce?: string } => JSON.parse(readFileSync(join(dir, LOCK_FILE), 'utf8')) as { pid?: number, nonce?: string }

t.test('two takers of one dead holder\'s lock: the second to remove it finds the first\'s and is refused', async (t) => {
  const dir = staleDir('two')
  let second: DataDirLock | undefined
  t.throws(() => DataDirLock.acquire(dir, { beforeTakeover: () => { second = DataDirLock.acquire(dir) } }),
    { message: new RegExp(`in use by process ${process.pid} `) }, 'the first taker is refused: the directory is the second\'s')
  t.ok(second, 'the second taker, which ran in between, holds the directory')
  t.equal(lockOf(dir).pid, process.pid, 'the lock file is the second taker\'s (its new lock was put back, not removed)')
  t.type(lockOf(dir).nonce, 'string')
  t.same(readdirSync(dir), [LOCK_FILE], 'nothing moved aside is left behind')
  second?.release()
  t.same(readdirSync(dir), [], 'released: the lock file is gone')
})

t.test('a half-written lock of a process that died writing it: the same race, one holder', async (t) => {
  const dir = staleDir('half', '{"pid":')
  const old = new Date(Date.now() - 60_000)
  utimesSync(join(dir, LOCK_FILE), old, old) // older than a lock being written
  let second: DataDirLock | undefined
  t.throws(() => DataDirLock.acquire(dir, { beforeTakeover: () => { second = DataDirLock.acquire(dir) } }), /in use by process/, 'the first taker is refused')
  t.ok(second, 'the second holds it')
  t.equal(lockOf(dir).pid, process.pid)
  second?.release()
  t.same(readdirSync(dir), [])
})

t.test('three takers: a lock created while another taker takes over the stale one is never removed', async (t) => {
  const dir = staleDir('three')
  // right after the first taker's first change to the directory (after the second took the
  // directory over), a third taker runs
  let third: (() => void) | undefined
  const real = { renameSync: fs.renameSync, linkSync: fs.linkSync, unlinkSync: fs.unlinkSync }
  for (const name of Object.keys(real) as Array<keyof typeof real>) {
    (fs as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
      const result = (real[name] as (...a: unknown[]) => unknown)(...args)
      const run = third
      third = undefined
      run?.()
      return result
    }
  }
  syncBuiltinESMExports()
  t.teardown(() => { Object.assign(fs, real); syncBuiltinESMExports() })

  let second: DataDirLock | undefined
  let thirdHeld: DataDirLock | undefined
  let thirdRefused: unknown
  t.throws(() => DataDirLock.acquire(dir, {
    beforeTakeover: () => {
      second = DataDirLock.acquire(dir)
      third = () => { try { thirdHeld = DataDirLock.acquire(dir) } catch (err) { thirdRefused = err } }
    }
  }), /in use by process/, 'the first taker is refused')
  Object.assign(fs, real)
  syncBuiltinESMExports()
  t.ok(second, 'the second taker holds the directory')
  t.equal(third, undefined, 'the third taker ran in the first one\'s takeover')
  t.notOk(thirdHeld, 'the third taker does not hold it too')
  t.match(String(thirdRefused), /in use by process/, 'the third taker is refused: the directory is the second\'s')
  thirdHeld?.release()
  t.same(readdirSync(dir), [LOCK_FILE], 'the second taker\'s lock is in place; nothing else is left')
  second?.release()
  t.same(readdirSync(dir), [], 'released: the lock file is gone')
})

t.test('a claim on the stale lock left by a taker that died claiming it', async (t) => {
  const stale = (name: string): { dir: string, claim: string } => {
    const dir = staleDir(name)
    const path = join(dir, LOCK_FILE)
    const { ino, mtimeMs } = statSync(path)
    const claim = claimPath(path, { ino, mtimeMs, text: readFileSync(path, 'utf8') }, 0)
    linkSync(path, claim) // what the dead taker did before it could remove the lock
    return { dir, claim }
  }
  const young = stale('claim-young')
  t.throws(() => DataDirLock.acquire(young.dir), /in use by another process/, 'a claim just made: another taker is under way, this one is refused')
  t.equal(readdirSync(young.dir).length, 2, 'the lock and the claim are left to that taker')
  const old = stale('claim-old')
  const later = (): number => Date.now() + 60_000 // a minute on: the claim's taker is gone
  const lock = DataDirLock.acquire(old.dir, { now: later })
  t.equal(lockOf(old.dir).pid, process.pid, 'a claim older than a takeover takes: the next taker takes the directory over')
  t.same(readdirSync(old.dir), [LOCK_FILE], 'the dead taker\'s claim is removed with the stale lock')
  lock.release()
  t.same(readdirSync(old.dir), [])
})

t.test('real processes on one stale lock in the same millisecond: exactly one holds it', async (t) => {
  const takers = 4
  for (let round = 0; round < 4; round++) {
    const dir = staleDir(`procs${round}`)
    const start = Date.now() + 4000 // after every taker has started (tsx takes ~0.5 s a process here)
    const children: Array<{ child: ChildProcess, out: () => string, exited: Promise<number | null> }> = []
    for (let i = 0; i < takers; i++) {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/fixtures/lock-taker.ts', dir, String(start)], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
      let out = ''
      child.stdout.on('data', (c: Buffer) => { out += c.toString() })
      child.stderr.on('data', (c: Buffer) => { out += c.toString() })
      const exited = new Promise<number | null>(resolve => child.once('exit', (code) => resolve(code)))
      t.teardown(async () => { if (child.exitCode === null && child.signalCode === null) { child.kill('SIGKILL'); await exited } })
      children.push({ child, out: () => out, exited })
    }
    await until('every taker to have answered', () => children.every(c => /^(held|refused) /m.test(c.out())), 30_000)
    const holders = children.filter(c => c.out().startsWith('held '))
    t.equal(holders.length, 1, `round ${round}: one of ${takers} holds the directory (${children.map(c => c.out().trim().slice(0, 40)).join(' | ')})`)
    const winner = holders[0]?.child.pid
    t.equal(lockOf(dir).pid, winner, 'the lock file names the one that holds it')
    // a taker that read the lock in the instant between its creation and its first write
    // cannot name the holder yet: "another process" (and it is never taken over while young)
    for (const c of children.filter(c => c !== holders[0])) t.match(c.out(), new RegExp(`^refused .*in use by (process ${String(winner)} |another process )`), 'the others are refused')
    for (const c of children) c.child.stdin?.end()
    await Promise.all(children.map(c => c.exited))
    t.same(readdirSync(dir), [], 'the holder gave it back on exit; nothing left aside')
  }
})
