import { randomBytes } from 'node:crypto'
import { closeSync, linkSync, openSync, readFileSync, renameSync, statSync, unlinkSync, writeSync } from 'node:fs'
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
 *
 * Two processes may find the same dead holder's lock at once. Each removes it only if it is
 * still the lock it judged (`removeIfStill`: moved aside by an atomic rename, compared, and
 * put back if another process had taken the directory over in between), so one of them
 * holds the directory and the other is refused (fix-embedded-lock-takeover-race; before,
 * the second removed the first's new lock and both held it).
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

  /**
   * takes the directory, or throws saying which process has it. `seam.beforeTakeover` runs
   * between judging a lock stale and removing it (the test of the takeover race)
   */
  static acquire (dataDir: string, seam?: { beforeTakeover?: () => void }): DataDirLock {
    const path = join(resolve(dataDir), LOCK_FILE)
    // the nonce tells this lock from an earlier one with the same pid (a restarted container)
    const content = JSON.stringify({ pid: process.pid, host: hostname(), nonce: randomBytes(6).toString('hex') }) + '\n'
    for (let attempt = 0; attempt < 3; attempt++) {
      let fd: number
      try {
        fd = openSync(path, 'wx', 0o600)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        let text: string | undefined
        try {
          text = readText(path)
        } catch {
          throw inUse(dataDir, path, undefined) // unreadable (another user's): never taken over
        }
        if (text === undefined) continue // removed in between: try again
        const holder = parseHolder(text)
        if (held.has(path) || (holder === undefined ? beingWritten(path) : holderAlive(holder))) throw inUse(dataDir, path, holder)
        // left by a process that is gone (or half written by one that died writing it)
        seam?.beforeTakeover?.()
        removeIfStill(path, text)
        continue
      }
      try {
        writeSync(fd, content)
      } finally {
        closeSync(fd)
      }
      return new DataDirLock(path, content)
    }
    // other processes took it over in between: it is theirs
    let text: string | undefined
    try { text = readText(path) } catch {}
    throw inUse(dataDir, path, text === undefined ? undefined : parseHolder(text))
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

function readText (path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

function parseHolder (text: string): Holder | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<Holder>
    if (Number.isSafeInteger(parsed.pid) && (parsed.pid as number) > 0 && typeof parsed.host === 'string') return parsed as Holder
  } catch {}
  return undefined
}

/**
 * Removes the lock at `path` only if it still reads `judged` (the stale lock). Unlinking it
 * outright would also remove a lock another process created after taking the same stale
 * lock over. The file is moved aside first (rename is atomic: whatever sat at `path` is then
 * this process's alone to look at) and compared; another process's lock is put back with
 * link(), which never overwrites. What this cannot cover: a third process creating a lock
 * in the microseconds between the rename and the link (then two hold it).
 */
function removeIfStill (path: string, judged: string): void {
  const aside = `${path}.${process.pid}-${randomBytes(4).toString('hex')}`
  try {
    renameSync(path, aside)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return // gone already
    throw err
  }
  try {
    if (readFileSync(aside, 'utf8') !== judged) linkSync(aside, path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
  } finally {
    unlinkSync(aside)
  }
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
