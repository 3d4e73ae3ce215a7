/**
 * The embedded driver: PGlite (PostgreSQL compiled to WASM) in this process, persisted
 * in a directory. It exists so `portcullis start` works with zero setup; production
 * runs PostgreSQL. One backend serialises everything, and NOTIFY reaches only this
 * process, which is all a single replica needs.
 */
import { spawn } from 'node:child_process'
import { existsSync } from 'node:fs'
import { mkdir, readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { PGlite } from '@electric-sql/pglite'
import type { Transaction } from '@electric-sql/pglite'
import { DataDirLock } from './data-dir-lock.js'
import { StoreUnavailableError } from './errors.js'
import type { SqlDriver, SqlExecutor } from './sql-store.js'

export interface EmbeddedDriverOptions {
  /** a directory, or `memory://` for a throwaway in-memory database (tests) */
  dataDir: string
}

function executor (db: PGlite | Transaction, isClosed: () => boolean): SqlExecutor {
  const guard = (): void => {
    if (isClosed()) throw new StoreUnavailableError({ cause: new Error('embedded store is closed') })
  }
  return {
    query: async (text, params) => {
      guard()
      return (await db.query<Record<string, unknown>>(text, params)).rows
    },
    exec: async (text) => {
      guard()
      await db.exec(text)
    },
  }
}

/** how long creating a new data directory may take before it counts as failed (~7 s here) */
const CREATE_TIMEOUT_MS = 120_000

/**
 * Creates the database cluster of a new data directory in a short-lived child process.
 *
 * PGlite runs PostgreSQL's initdb in the process that opens the directory, and the memory it
 * takes (WebAssembly memory, which never shrinks) stayed: a gateway started on a new
 * directory idled at ~0.8 GiB RSS, one restarted on the same directory at ~0.3 GiB
 * (`npm run bench`, startup). Run in a child, initdb's memory leaves with the child, and the
 * gateway opens the directory as it opens an existing one. A failed creation takes back
 * what it wrote — only the entries that were not there before — so the next start tries
 * again instead of meeting half a cluster.
 */
async function createCluster (dataDir: string): Promise<void> {
  const before = new Set(await readdir(dataDir))
  const script = 'const { PGlite } = await import(process.argv[1]); const db = await PGlite.create(process.argv[2]); await db.close()'
  const child = spawn(process.execPath, ['--input-type=module', '-e', script, import.meta.resolve('@electric-sql/pglite'), dataDir], {
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  let stderr = ''
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => { if (stderr.length < 64 * 1024) stderr += chunk })
  let timedOut = false
  const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL') }, CREATE_TIMEOUT_MS)
  const outcome = await new Promise<{ code: number | null, signal: NodeJS.Signals | null } | Error>(resolve => {
    child.once('error', resolve)
    child.once('close', (code, signal) => { resolve({ code, signal }) })
  }).finally(() => { clearTimeout(timer) })
  if (!(outcome instanceof Error) && outcome.code === 0) return
  for (const entry of await readdir(dataDir)) {
    if (!before.has(entry)) await rm(join(dataDir, entry), { recursive: true, force: true })
  }
  throw new Error(`could not create the embedded database in ${dataDir}: ${failure(outcome, timedOut, stderr)}`)
}

/** why the creating child failed, in a few words */
function failure (outcome: { code: number | null, signal: NodeJS.Signals | null } | Error, timedOut: boolean, stderr: string): string {
  if (outcome instanceof Error) return outcome.message // it never started
  if (timedOut) return `not done after ${CREATE_TIMEOUT_MS / 1000} s`
  // a signal we did not send is most often the kernel's OOM killer (initdb takes ~0.8 GiB)
  if (outcome.signal !== null) return `the process creating it was killed by ${outcome.signal}`
  // the last line of stderr that says something: PGlite's errors end there
  const lines = stderr.split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('Node.js v') && !l.startsWith('at '))
  return lines.at(-1) ?? `exit code ${String(outcome.code)}`
}

export async function createEmbeddedDriver (opts: EmbeddedDriverOptions): Promise<SqlDriver> {
  let lock: DataDirLock | undefined
  let db: PGlite
  try {
    if (!opts.dataDir.includes('://')) {
      await mkdir(opts.dataDir, { recursive: true })
      // taken before anything is created or opened: PGlite would let a second process in
      lock = DataDirLock.acquire(opts.dataDir)
      // PGlite's own test for a new directory
      if (!existsSync(join(opts.dataDir, 'PG_VERSION'))) await createCluster(opts.dataDir)
    }
    db = await PGlite.create(opts.dataDir)
  } catch (err) {
    lock?.release()
    throw err
  }
  let closed = false
  const isClosed = (): boolean => closed
  const q = executor(db, isClosed)
  return {
    kind: 'embedded',
    ...q,
    // one backend: the whole database is already "one connection"
    withConnection: async (fn) => await fn(q),
    transaction: async (fn) => {
      if (closed) throw new StoreUnavailableError({ cause: new Error('embedded store is closed') })
      return await db.transaction(async (tx) => await fn(executor(tx, isClosed)))
    },
    listen: async (channel, onPayload) => {
      // in-process: this subscription cannot be lost while the database is open
      const unsubscribe = await db.listen(channel, onPayload)
      return {
        close: async () => { if (!closed) await unsubscribe() },
        // nothing between us and the database to go silently dead: a heartbeat only
        // needs to know that the database is still open
        ping: async () => {
          if (closed) throw new StoreUnavailableError({ cause: new Error('embedded store is closed') })
        },
      }
    },
    close: async () => {
      if (closed) return
      closed = true
      try {
        await db.close()
      } finally {
        lock?.release()
      }
    },
  }
}
