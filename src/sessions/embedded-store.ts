/**
 * The embedded driver: PGlite (PostgreSQL compiled to WASM) in this process, persisted
 * in a directory. It exists so `portcullis start` works with zero setup; production
 * runs PostgreSQL. One backend serialises everything, and NOTIFY reaches only this
 * process, which is all a single replica needs.
 */
import { mkdir } from 'node:fs/promises'
import { PGlite } from '@electric-sql/pglite'
import type { Transaction } from '@electric-sql/pglite'
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

export async function createEmbeddedDriver (opts: EmbeddedDriverOptions): Promise<SqlDriver> {
  if (!opts.dataDir.includes('://')) await mkdir(opts.dataDir, { recursive: true })
  const db = await PGlite.create(opts.dataDir)
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
      await db.close()
    },
  }
}
