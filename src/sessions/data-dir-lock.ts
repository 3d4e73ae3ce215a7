import { createHash, randomBytes } from 'node:crypto'
import { closeSync, fstatSync, linkSync, openSync, readFileSync, readSync, statSync, unlinkSync, writeSync } from 'node:fs'
import { hostname } from 'node:os'
import { join, resolve } from 'node:path'

/** the lock file inside an embedded data directory */
export const LOCK_FILE = 'portcullis.pid'
// a lock file without a readable holder this young is being written by its taker; a claim on
// a stale lock this old was left by a taker that died in the microseconds of its takeover
const WRITING_MS = 10_000
// claims on one stale lock, each after the one before was left by a taker that died
const CLAIM_ROUNDS = 4
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
 * Several processes may find the same dead holder's lock at once. Only one of them removes
 * it: the one whose claim on that very file succeeds (`takeOver`), and no file is ever
 * moved away from the lock's name and back, so a lock another process has just created is
 * never removed (fix-embedded-lock-takeover-race; fix-lock-takeover-three-takers).
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
   * takes the directory, or throws saying which process has it. For the tests of the
   * takeover race: `seam.beforeTakeover` runs between judging a lock stale and claiming it;
   * `seam.now` is the clock that ages files (a claim left by a dead taker without waiting)
   */
  static acquire (dataDir: string, seam?: { beforeTakeover?: () => void, now?: () => number }): DataDirLock {
    const now = seam?.now ?? Date.now
    const path = join(resolve(dataDir), LOCK_FILE)
    // the nonce tells this lock from an earlier one with the same pid (a restarted container)
    const content = JSON.stringify({ pid: process.pid, host: hostname(), nonce: randomBytes(6).toString('hex') }) + '\n'
    for (let attempt = 0; attempt < 4; attempt++) {
      let fd: number
      try {
        fd = openSync(path, 'wx', 0o600)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
        let found: LockFile | undefined
        try {
          found = readLock(path)
        } catch {
          throw inUse(dataDir, path, undefined) // unreadable (another user's): never taken over
        }
        if (found === undefined) continue // removed in between: try again
        const holder = parseHolder(found.text)
        if (held.has(path) || (holder === undefined ? now() - found.mtimeMs < WRITING_MS : holderAlive(holder))) throw inUse(dataDir, path, holder)
        // left by a process that is gone (or half written by one that died writing it)
        seam?.beforeTakeover?.()
        if (!takeOver(path, found, now)) throw inUse(dataDir, path, undefined) // another process is taking it over
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
    let found: LockFile | undefined
    try { found = readLock(path) } catch {}
    throw inUse(dataDir, path, found === undefined ? undefined : parseHolder(found.text))
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

/** one lock file as read: which file it was (inode, mtime) and what it said */
export interface LockFile { ino: number, mtimeMs: number, text: string }

/** reads the file at `path` through one descriptor, so the identity and the text are of one file; undefined if there is none */
function readLock (path: string): LockFile | undefined {
  let fd: number
  try {
    fd = openSync(path, 'r')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  try {
    const { ino, mtimeMs, size } = fstatSync(fd)
    const buffer = Buffer.alloc(Math.min(size, 4096))
    const length = readSync(fd, buffer, 0, buffer.length, 0)
    return { ino, mtimeMs, text: buffer.toString('utf8', 0, length) }
  } finally {
    closeSync(fd)
  }
}

function parseHolder (text: string): Holder | undefined {
  try {
    const parsed = JSON.parse(text) as Partial<Holder>
    if (Number.isSafeInteger(parsed.pid) && (parsed.pid as number) > 0 && typeof parsed.host === 'string') return parsed as Holder
  } catch {}
  return undefined
}

const same = (a: LockFile | undefined, b: LockFile): boolean => a !== undefined && a.ino === b.ino && a.mtimeMs === b.mtimeMs && a.text === b.text

/**
 * Removes the stale lock `judged` from `path`, if this process is the one to claim it. The
 * claim is a second name for the file at `path`, made with link() (atomic, never overwrites)
 * under a name only that file has (its inode, mtime and text): of several processes that
 * judged the same file stale, one makes the name and the others find it. The claimant then
 * looks at what it named: another file (the stale one was removed and a process created its
 * lock since) is left alone, only the extra name goes. The judged file stays at `path` until
 * its claimant removes it, as no one else may: so `path` is removed only while it is that
 * file. Before (removeIfStill), a stale lock was moved aside and put back when it turned out
 * to be another process's new lock; a third process creating its lock in between was then a
 * second holder (fix-lock-takeover-three-takers).
 *
 * A claim is left behind only by a taker that died between making it and removing the lock
 * (microseconds). A claim older than a lock being written is that; the next round's name is
 * claimed then (never removed while others may race for it). What this assumes, like the
 * half-written lock above: no taker pauses for 10 seconds in the middle of its takeover.
 */
function takeOver (path: string, judged: LockFile, now: () => number): boolean {
  for (let round = 0; round < CLAIM_ROUNDS; round++) {
    const claim = claimPath(path, judged, round)
    try {
      linkSync(path, claim)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      if (code === 'ENOENT') return true // no lock at all now: try again
      if (code !== 'EEXIST') throw err
      // the claim's inode is the stale lock's: its ctime is when the last claim on it was made
      const made = statSync(claim, { throwIfNoEntry: false })
      if (made === undefined) return true // its taker is done: try again
      if (now() - made.ctimeMs < WRITING_MS) return false // another taker's, under way
      continue // left by a taker that died claiming it
    }
    try {
      if (same(readLock(claim), judged)) {
        removeIfThere(path) // ours alone to remove: it is still the judged file
        for (let r = 0; r < round; r++) removeIfThere(claimPath(path, judged, r)) // the dead takers' claims
      }
    } finally {
      removeIfThere(claim)
    }
    return true
  }
  return false
}

/** the name of a claim on the stale lock `judged` at `path` (exported for the test of a dead taker's claim) */
export function claimPath (path: string, judged: LockFile, round: number): string {
  return `${path}.takeover-${createHash('sha256').update(`${judged.ino}:${judged.mtimeMs}:${judged.text}`).digest('hex').slice(0, 16)}-${round}`
}

function removeIfThere (path: string): void {
  try {
    unlinkSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
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
