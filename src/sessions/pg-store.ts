/**
 * The PostgreSQL driver: a `pg` Pool for queries and transactions, a dedicated
 * `pg.Client` per LISTEN subscription (a pooled connection could be handed to someone
 * else, and notifications only reach the connection that listens).
 *
 * Every pg error passes through translatePgError(), the one place where "the database
 * is unreachable" becomes StoreUnavailableError (503); other errors pass unchanged.
 */
import pg from 'pg'
import { StoreUnavailableError } from './errors.js'
import type { SqlDriver, SqlExecutor } from './sql-store.js'
import type { SessionsLogger, StoreListener } from './store.js'

export const DEFAULT_POOL_SIZE = 10
/** fail fast instead of queueing forever when the server does not answer */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000

/** Node socket errors that mean the server cannot be reached */
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ENETDOWN',
])

/** SQLSTATEs that mean the server is going away or refusing connections */
function isUnavailableSqlState (code: string): boolean {
  return code.startsWith('08') || // connection_exception class
    code === '57P01' || // admin_shutdown
    code === '57P02' || // crash_shutdown
    code === '57P03' || // cannot_connect_now (starting up / shutting down)
    code === '53300' // too_many_connections
}

/** pg reports some connection failures only by message */
const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error',
  'Cannot use a pool after calling end',
  'Client was closed and is not queryable',
  'Connection terminated due to connection timeout',
]

export function isPgUnavailable (err: unknown): boolean {
  if (err === null || typeof err !== 'object') return false
  if (err instanceof StoreUnavailableError) return true
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && (NETWORK_ERROR_CODES.has(code) || (/^[0-9A-Z]{5}$/.test(code) && isUnavailableSqlState(code)))) {
    return true
  }
  const message = (err as { message?: unknown }).message
  if (typeof message === 'string' && UNAVAILABLE_MESSAGES.some((m) => message.includes(m))) return true
  // AggregateError from a dual-stack connect attempt
  const errors = (err as { errors?: unknown }).errors
  return Array.isArray(errors) && errors.length > 0 && errors.every(isPgUnavailable)
}

/** The boundary: pg errors that mean "unreachable" become StoreUnavailableError (cause kept). */
export function translatePgError (err: unknown): unknown {
  if (err instanceof StoreUnavailableError) return err
  return isPgUnavailable(err) ? new StoreUnavailableError({ cause: err }) : err
}

async function translated<T> (p: Promise<T>): Promise<T> {
  try {
    return await p
  } catch (err) {
    throw translatePgError(err)
  }
}

export interface PgDriverOptions {
  url: string
  poolSize?: number | undefined
  logger?: SessionsLogger | undefined
}

function executor (c: pg.Pool | pg.PoolClient): SqlExecutor {
  return {
    query: async (text, params) => (await translated(c.query(text, params))).rows,
    exec: async (text) => { await translated(c.query(text)) },
  }
}

export function createPgDriver (opts: PgDriverOptions): SqlDriver {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize ?? DEFAULT_POOL_SIZE,
    connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: DEFAULT_IDLE_TIMEOUT_MS,
    application_name: 'portcullis',
  })
  // An idle pooled client whose server goes away emits 'error' on the pool; without a
  // listener that would crash the process. The next query reconnects.
  pool.on('error', (err) => {
    opts.logger?.warn({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'idle PostgreSQL connection lost')
  })
  const listeners = new Set<pg.Client>()

  const withConnection = async <T>(fn: (q: SqlExecutor) => Promise<T>): Promise<T> => {
    const client = await translated(pool.connect())
    let broken: unknown
    try {
      return await fn(executor(client))
    } catch (err) {
      if (isPgUnavailable(err)) broken = err
      throw err
    } finally {
      // a client whose connection failed must not go back to the pool
      client.release(broken instanceof Error ? broken : broken === undefined ? undefined : true)
    }
  }

  return {
    kind: 'postgres',
    ...executor(pool),
    withConnection,
    transaction: async (fn) => await withConnection(async (q) => {
      await q.exec('BEGIN')
      try {
        const result = await fn(q)
        await q.exec('COMMIT')
        return result
      } catch (err) {
        await q.exec('ROLLBACK').catch(() => {})
        throw err
      }
    }),
    listen: async (channel, onPayload, onLost): Promise<StoreListener> => {
      const client = new pg.Client({
        connectionString: opts.url,
        connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS,
        application_name: 'portcullis-revocation-feed',
        // keepalive so a silently dead peer is noticed, not waited on forever
        keepAlive: true,
      })
      let closing = false
      let lost = false
      const fail = (err: Error): void => {
        if (closing || lost) return
        lost = true
        listeners.delete(client)
        client.end().catch(() => {})
        onLost(err)
      }
      client.on('error', fail)
      client.on('end', () => fail(new StoreUnavailableError({ cause: new Error('listen connection ended') })))
      client.on('notification', (msg) => {
        if (msg.channel === channel && msg.payload !== undefined) onPayload(msg.payload)
      })
      try {
        await translated(client.connect())
        // channel is a constant identifier (REVOCATION_CHANNEL), never user input
        await translated(client.query(`LISTEN ${channel}`))
      } catch (err) {
        closing = true
        await client.end().catch(() => {})
        throw translatePgError(err)
      }
      listeners.add(client)
      return {
        close: async () => {
          closing = true
          listeners.delete(client)
          await client.end().catch(() => {})
        },
      }
    },
    close: async () => {
      for (const c of listeners) await c.end().catch(() => {})
      listeners.clear()
      await pool.end()
    },
  }
}
