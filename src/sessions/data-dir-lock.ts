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
 * One process at a time on an embedded data directory. PGlite takes no lock of its own: two
 * processes opened the same directory side by side without an error, and what one of them
 * wrote was gone once the other closed (a user added with `portcullis users add` while the
 * gateway ran, fix-embedded-store-one-process). The first to create `DIR/portcullis.pid`
 * (O_EXCL: atomic, so two first starts cannot both win) holds the directory until it closes
 * the store or exits.
 *
 * A lock left by a process that died (SIGKILL, OOM) is taken over when its process is gone:
 * on this host, `kill(pid, 0)` says so; our own pid in a lock this process does not hold is
 * an earlier process's (a container restarted: PID 1 again). A lock written on another host (another
 * container on the same volume, whose processes this one cannot see) is never taken over:
 * the error says whose it is and which file to delete once that process is gone.
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
