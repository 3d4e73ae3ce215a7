import { closeSync, openSync, readFileSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'

/** the lock file inside an embedded data directory */
export const LOCK_FILE = 'portcullis.pid'
// a lock file without a readable holder this young is being written by its taker
const WRITING_MS = 10_000
/** the lock files this process holds (a second store in this process on one directory is refused too) */
const held = new Set<string>()

/**
 * One process at a time on an embedded data directory. PGlite takes no lock of its own: a
 * second process opened a directory in use without an error, each then worked on its own
 * copy of the database's pages, and which writes survived depended on who wrote last (rows
 * the second wrote were gone once the first closed). The README said the CLI and a running
 * gateway cannot share the directory; now they cannot (fix-embedded-store-one-process). The
 * first to create `DIR/portcullis.pid` (O_EXCL: atomic, so of two first starts one wins)
 * holds the directory until it closes the store or exits.
 *
 * A lock left by a process that died (SIGKILL, OOM) is taken over once its process is gone:
 * on this host `kill(pid, 0)` says so, and our own pid in a lock this process does not hold
 * is an earlier process's (a restarted container is PID 1 again). A lock written on another
 * host (another container on the same volume, whose processes cannot be seen from here) is
 * never taken over: the error says whose it is and which file to delete once it is gone.
 */
export class DataDirLock {
  readonly #path: string
  readonly #content: string
  #held = true

  private constructor (path: string, content: string) {
    this.#path = path
    this.#content = content
    held.add(path)
    process.once('exit', this.#onExit)
  }

  /** takes the directory, or throws saying which process has it */
  static acquire (dataDir: string): DataDirLock {
    const path = join(resolve(dataDir), LOCK_FILE)
    const content = JSON.stringify({ pid: process.pid, host: hostname() }) + '\n'
    for (let attempt = 0; attempt < 2; attempt++) {
      let fd: number
      try {
        fd = openSync(path, 'wx', 0o600)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        const holder = readHolder(path)
        if (held.has(path) || (holder === undefined ? beingWritten(path) : holderAlive(holder))) throw inUse(dataDir, path, holder)
        // left by a process that is gone (or half written by one that died writing it)
        try { unlinkSync(path) } catch (e) { if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e }
        continue
      }
      try {
        writeSync(fd, content)
      } finally {
        closeSync(fd)
      }
      return new DataDirLock(path, content)
    }
    // another process took it over in between: it is theirs
    throw inUse(dataDir, path, readHolder(path))
  }

  /** gives the directory back (only if the file is still ours) */
  release (): void {
    if (!this.#held) return
    this.#held = false
    held.delete(this.#path)
    process.removeListener('exit', this.#onExit)
    try {
      if (readFileSync(this.#path, 'utf8') === this.#content) unlinkSync(this.#path)
    } catch {}
  }

  readonly #onExit = (): void => { this.release() }
}

interface Holder { pid: number, host: string }

function readHolder (path: string): Holder | undefined {
  try {
    const parsed = JSON.parse(readFileSync(path, 'utf8')) as Partial<Holder>
    if (Number.isSafeInteger(parsed.pid) && (parsed.pid as number) > 0 && typeof parsed.host === 'string') return parsed as Holder
  } catch {}
  return undefined
}

function beingWritten (path: string): boolean {
  try {
    return Date.now() - statSync(path).mtimeMs < WRITING_MS
  } catch {
    return false // gone already
  }
}

function holderAlive (holder: Holder): boolean {
  if (holder.host !== hostname()) return true // cannot be seen from here: assume it runs
  if (holder.pid === process.pid) return false // not held here (above): an earlier process with our pid
  try {
    process.kill(holder.pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM' // alive, someone else's
  }
}

function inUse (dataDir: string, path: string, holder: Holder | undefined): Error {
  const here = holder?.host === hostname()
  const who = holder === undefined ? 'another process' : here ? `process ${holder.pid}` : `process ${holder.pid} on host ${holder.host}`
  return new Error(`the embedded database in ${dataDir} is in use by ${who} (${path}); ` +
    'one process at a time: stop it first, or use PostgreSQL (database.url) to run the CLI beside a gateway' +
    (here ? '' : `; if that process is gone, delete ${path}`))
}
