/**
 * fix-embedded-first-start-memory: a gateway started on a new embedded data directory idled
 * at ~0.8 GiB RSS until its first restart (~0.3 GiB after): PGlite ran PostgreSQL's initdb in
 * the gateway's own process, and that WebAssembly memory never shrinks. A new directory is
 * now created in a short-lived child process (src/sessions/embedded-store.ts), so initdb's
 * memory never reaches this process. Real PGlite, real directories, this process's own
 * peak RSS (VmHWM) — no mock.
 */
import t from 'tap'
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises'
import { readdirSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openStore } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { memKiB } from '../../bench/lib/proc.js'
import { PROCESS_WAIT_MS, until } from '../fixtures/until.js'
import { LOCK_FILE } from '../../src/sessions/data-dir-lock.js'

// creating a directory in this process peaked at 790–850 MiB; opening an existing one
// (what this process now does) at 380–470 MiB including tap and tsx
const PEAK_LIMIT_MIB = 650

const dir = await mkdtemp(join(tmpdir(), 'portcullis-embedded-first-'))
t.teardown(async () => { await rm(dir, { recursive: true, force: true }) })

t.test('a new data directory is created without initdb\'s memory in this process', async (t) => {
  const dataDir = join(dir, 'new')
  const store = await openStore({ dataDir })
  t.teardown(async () => { await store.close() })
  const peak = memKiB(process.pid).hwm / 1024 // NaN (no /proc) fails the check below
  t.comment(`peak RSS after creating and opening: ${peak.toFixed(0)} MiB`)
  t.ok(peak < PEAK_LIMIT_MIB, `peak RSS ${peak.toFixed(0)} MiB stays under ${PEAK_LIMIT_MIB} MiB`)
  t.ok((await readdir(dataDir)).includes('PG_VERSION'), 'the cluster is on disk')
  t.same(await store.migrate(), [], 'migrations were applied on open')
  await addUser(store, { name: 'alice', password: 'pw', scopes: ['s'] }, Date.now())
  t.same((await store.findUserByName('alice'))?.scopes, ['s'], 'the store works')
})

t.test('a creation that fails says where and why, and takes back only what it wrote', async (t) => {
  // a file where PostgreSQL makes a directory: initdb fails part way through
  const dataDir = join(dir, 'blocked')
  await mkdir(dataDir)
  await writeFile(join(dataDir, 'global'), 'the operator\'s file\n')
  const prefix = `could not create the embedded database in ${dataDir}: `
  // a message-less ErrnoError was what the code before gave
  const message = await openStore({ dataDir }).then(() => 'opened', (e: unknown) => String((e as Error).message))
  t.ok(message.startsWith(prefix), `refused, naming the directory: ${message}`)
  t.ok(message.length > prefix.length, 'and saying why')
  t.same(await readdir(dataDir), ['global'], 'what was there stays; what the failed creation wrote is gone')
  t.equal(readFileSync(join(dataDir, 'global'), 'utf8'), 'the operator\'s file\n', 'the file is unchanged')
})

/** the pid of a process whose command line names `needle`, or undefined */
function processNaming (needle: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(needle)) return Number(entry)
    } catch {} // it ended in between
  }
  return undefined
}

t.test('a creation killed part way (the OOM killer) leaves nothing behind, and the next start succeeds', async (t) => {
  const dataDir = join(dir, 'killed')
  const opening = openStore({ dataDir })
  opening.catch(() => {}) // awaited below
  // the real child, killed for real once it has written part of the cluster
  let pid: number | undefined
  await until('the child creating the directory', () => (pid = processNaming(dataDir)) !== undefined, PROCESS_WAIT_MS)
  // the lock file (data-dir-lock.ts) is there from the start: wait for the cluster's own entries
  await until('the child writing part of the cluster', async () => (await readdir(dataDir)).some(e => e !== LOCK_FILE), PROCESS_WAIT_MS)
  process.kill(pid as number, 'SIGKILL')
  await t.rejects(opening, { message: /: the process creating it was killed by SIGKILL$/ })
  t.same(await readdir(dataDir), [], 'the half-made cluster is gone')
  const store = await openStore({ dataDir })
  t.teardown(async () => { await store.close() })
  t.same(await store.migrate(), [], 'the next start creates it whole')
})
