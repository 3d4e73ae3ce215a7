/**
 * The PostgreSQL driver: a `pg` Pool for queries and transactions, a dedicated
 * `pg.Client` per LISTEN subscription (a pooled connection could be handed to someone
 * else, and notifications only reach the connection that listens).
 *
 * Every pg error passes through translatePgError(), the one place where "the database
 * is unreachable" becomes StoreUnavailableError (503); other errors pass unchanged.
 */
import { randomBytes } from 'node:crypto'
import type { Socket } from 'node:net'
import pg from 'pg'
import { CommitOutcomeUnknownError, StoreUnavailableError } from './errors.js'
import type { SqlDriver, SqlExecutor } from './sql-store.js'
import type { SessionsLogger, StoreListener } from './store.js'

export const DEFAULT_POOL_SIZE = 10
/** fail fast instead of queueing forever when the server does not answer */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000
export const DEFAULT_IDLE_TIMEOUT_MS = 30_000
/**
 * TCP keep-alive of the LISTEN connection: probes start after this much idle time instead
 * of the OS default (2 h), so a NAT or load balancer that forgets an idle flow is noticed
 * even if the heartbeat is switched off.
 */
export const LISTEN_KEEPALIVE_INITIAL_DELAY_MS = 10_000
/**
 * Client-side read timeout, on top of statement_timeout: a server that stops answering
 * altogether (a black-holed connection) never sends the statement_timeout error.
 */
export const QUERY_TIMEOUT_MARGIN_MS = 2_000
/** a transaction idle this long (a frozen replica) is ended by the server: its row locks go */
export const MIN_IDLE_IN_TRANSACTION_TIMEOUT_MS = 10_000

/** Node socket errors that mean the server cannot be reached */
const NETWORK_ERROR_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ECONNABORTED', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH',
  'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ENETDOWN',
])

/**
 * SQLSTATEs of a statement that gave up waiting (lock_timeout, statement_timeout): the
 * store is too busy to answer in time. The caller gets a 503 like an outage and may retry;
 * the connection itself is healthy and goes back to the pool.
 */
const TIMEOUT_SQL_STATES = new Set(['55P03', '57014'])

/**
 * SQLSTATEs of a server that answers but cannot do the work now, whatever the request: a
 * node in recovery or switched read-only (25006: a failover that left the URL on a standby or
 * a demoted primary, a managed PostgreSQL read-only on a full disk), a transaction chosen as a
 * deadlock or serialization victim (class 40), resources exhausted (53: disk, memory,
 * connections), the database dropped (57P04), an I/O or internal error of the server (58,
 * XX). A 503 the client may retry, never a 500 — which stays for what is the gateway's own
 * bug (a statement PostgreSQL refuses as written: classes 22, 23, 42…). The connection is
 * healthy and goes back to the pool (fix-store-refusals-are-500).
 */
function isStoreRefusal (code: string): boolean {
  return TIMEOUT_SQL_STATES.has(code) || code === '25006' || code === '57P04' ||
    code.startsWith('40') || code.startsWith('53') || code.startsWith('58') || code.startsWith('XX')
}

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
  // pg's client-side query_timeout: the connection is in an unknown state
  'Query read timeout',
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

function isPgRefusal (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) && isStoreRefusal(code)
}

/**
 * The boundary: pg errors that mean "unreachable", "gave up waiting" (lock_timeout,
 * statement_timeout) or "cannot do it now" (isStoreRefusal) become StoreUnavailableError
 * (cause kept).
 */
export function translatePgError (err: unknown): unknown {
  if (err instanceof StoreUnavailableError) return err
  return isPgUnavailable(err) || isPgRefusal(err) ? new StoreUnavailableError({ cause: err }) : err
}

/** a connection whose failure says nothing about its health (a timeout, a refusal) may be reused */
function breaksConnection (err: unknown): boolean {
  if (err instanceof StoreUnavailableError) return !isPgRefusal(err.cause) && isPgUnavailable(err.cause ?? err)
  return isPgUnavailable(err)
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
  /** the LISTEN connection's URL (default: url) — e.g. straight to PostgreSQL past a transaction-mode pooler */
  listenUrl?: string | undefined
  poolSize?: number | undefined
  /** statement_timeout of pooled connections, ms (0 or undefined: none) */
  statementTimeoutMs?: number | undefined
  /** lock_timeout of pooled connections, ms (0 or undefined: none) */
  lockTimeoutMs?: number | undefined
  logger?: SessionsLogger | undefined
}

/** the socket under a pg.Client: destroying it is the only way out of a black-holed connection */
function socketOf (client: pg.Client): Socket | undefined {
  return (client as unknown as { connection?: { stream?: Socket } }).connection?.stream
}

/** how long a clean goodbye (Terminate) may take before the socket is destroyed */
const END_GRACE_MS = 1_000

/**
 * Ends a client politely, and destroys its socket if the server does not answer within
 * END_GRACE_MS: on a black-holed connection end() would otherwise never complete.
 */
async function endClient (client: pg.Client): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([
    client.end().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(() => { socketOf(client)?.destroy(); resolve() }, END_GRACE_MS)
      timer.unref()
    }),
  ])
  clearTimeout(timer)
}

const HEARTBEAT_CHANNEL_PREFIX = 'portcullis_hb_'

/**
 * The whole setup of a LISTEN connection (connect and both LISTENs) must finish within this,
 * not only connect(): past a stalled pooler (a full session-mode pool), a paused backend or a
 * flow that went half-open right after the handshake, the startup is answered and LISTEN never
 * is (fix-feed-reconnect-stalls). Then the socket is destroyed — a polite Terminate would wait
 * as well.
 */
export const LISTEN_SETUP_TIMEOUT_MS = DEFAULT_CONNECT_TIMEOUT_MS

function executor (c: pg.Pool | pg.PoolClient | pg.Client): SqlExecutor {
  return {
    query: async (text, params) => (await translated(c.query(text, params))).rows,
    exec: async (text) => { await translated(c.query(text)) },
  }
}

export function createPgDriver (opts: PgDriverOptions): SqlDriver {
  const statementTimeoutMs = opts.statementTimeoutMs ?? 0
  const lockTimeoutMs = opts.lockTimeoutMs ?? 0
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.poolSize ?? DEFAULT_POOL_SIZE,
    connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS,
    idleTimeoutMillis: DEFAULT_IDLE_TIMEOUT_MS,
    application_name: 'portcullis',
    // Sent as startup parameters, so they hold on every pooled connection from its first
    // statement: a stuck lock holder or a runaway query fails the request with 503
    // instead of hanging it (issue 9 item 8). 0 leaves the server default.
    ...(statementTimeoutMs > 0
      ? {
          statement_timeout: statementTimeoutMs,
          query_timeout: statementTimeoutMs + QUERY_TIMEOUT_MARGIN_MS,
          // a transaction left open by a frozen replica must not hold its row locks forever
          idle_in_transaction_session_timeout: Math.max(statementTimeoutMs * 2, MIN_IDLE_IN_TRANSACTION_TIMEOUT_MS),
        }
      : {}),
    ...(lockTimeoutMs > 0 ? { lock_timeout: lockTimeoutMs } : {}),
  })
  // An idle pooled client whose server goes away emits 'error' on the pool; without a
  // listener that would crash the process. The next query reconnects.
  pool.on('error', (err) => {
    opts.logger?.warn({ err: { message: err.message, code: (err as { code?: unknown }).code } }, 'idle PostgreSQL connection lost')
  })
  const listeners = new Set<pg.Client>()

  const pooled = async <T>(fn: (q: SqlExecutor) => Promise<T>): Promise<T> => {
    const client = await translated(pool.connect())
    let broken: unknown
    try {
      return await fn(executor(client))
    } catch (err) {
      if (breaksConnection(err)) broken = err
      throw err
    } finally {
      // a client whose connection failed must not go back to the pool
      client.release(broken instanceof Error ? broken : broken === undefined ? undefined : true)
    }
  }

  return {
    kind: 'postgres',
    ...executor(pool),
    // a connection of its own, outside the pool: the pool's connections carry the request
    // timeouts from their first statement (startup parameters), and the statement that would
    // lift them was itself cancelled when it outlasted a short statement_timeout (seen with
    // 1 ms on a loaded machine), as was a replica's wait for another's migration
    withConnection: async (fn) => {
      const client = new pg.Client({ connectionString: opts.url, connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS, application_name: 'portcullis-migrations' })
      // a connection lost mid-way fails the statement in flight; without a listener it would crash the process
      client.on('error', () => {})
      await translated(client.connect())
      try {
        return await fn(executor(client))
      } finally {
        await endClient(client)
      }
    },
    transaction: async (fn) => await pooled(async (q) => {
      await q.exec('BEGIN')
      let result
      try {
        result = await fn(q)
      } catch (err) {
        // A connection that broke or timed out is destroyed on release, and the server rolls
        // its transaction back when it goes. A ROLLBACK sent on it would only queue behind the
        // statement still unanswered, for another whole read timeout (fix-commit-answer-lost).
        if (!breaksConnection(err)) await q.exec('ROLLBACK').catch(() => {})
        throw err
      }
      try {
        await q.exec('COMMIT')
      } catch (err) {
        // Answered with an error: the server ended the transaction without committing it. Not
        // answered (the connection broke, the read timed out): it may have committed — the
        // caller is told so, and no ROLLBACK follows (see above).
        throw breaksConnection(err) ? new CommitOutcomeUnknownError({ cause: err }) : err
      }
      return result
    }),
    listen: async (channel, onPayload, onLost): Promise<StoreListener> => {
      const client = new pg.Client({
        connectionString: opts.listenUrl !== undefined && opts.listenUrl !== '' ? opts.listenUrl : opts.url,
        connectionTimeoutMillis: DEFAULT_CONNECT_TIMEOUT_MS,
        application_name: 'portcullis-revocation-feed',
        // keep-alive with a short first probe: the OS default waits 2 h before the first
        keepAlive: true,
        keepAliveInitialDelayMillis: LISTEN_KEEPALIVE_INITIAL_DELAY_MS,
      })
      // A channel only this connection listens on: heartbeats reach no other replica.
      const heartbeatChannel = HEARTBEAT_CHANNEL_PREFIX + randomBytes(8).toString('hex')
      const pings = new Map<string, () => void>()
      let closing = false
      let lost = false
      const abort = async (): Promise<void> => {
        listeners.delete(client)
        await endClient(client)
      }
      const fail = (err: Error): void => {
        if (closing || lost) return
        lost = true
        abort().catch(() => {})
        onLost(err)
      }
      client.on('error', fail)
      client.on('end', () => fail(new StoreUnavailableError({ cause: new Error('listen connection ended') })))
      client.on('notification', (msg) => {
        if (msg.channel === channel && msg.payload !== undefined) onPayload(msg.payload)
        else if (msg.channel === heartbeatChannel && msg.payload !== undefined) pings.get(msg.payload)?.()
      })
      let setupTimer: NodeJS.Timeout | undefined
      try {
        await Promise.race([
          (async () => {
            await translated(client.connect())
            // channels are constant identifiers (REVOCATION_CHANNEL, a hex suffix), never user input
            await translated(client.query(`LISTEN ${channel}`))
            await translated(client.query(`LISTEN ${heartbeatChannel}`))
          })(),
          new Promise<never>((_resolve, reject) => {
            setupTimer = setTimeout(() => {
              closing = true
              reject(new StoreUnavailableError({ cause: new Error(`listen connection not set up within ${LISTEN_SETUP_TIMEOUT_MS} ms`) }))
              socketOf(client)?.destroy()
            }, LISTEN_SETUP_TIMEOUT_MS)
            setupTimer.unref()
          }),
        ])
      } catch (err) {
        closing = true
        await abort()
        throw translatePgError(err)
      } finally {
        clearTimeout(setupTimer)
      }
      listeners.add(client)
      return {
        close: async () => {
          closing = true
          await abort()
        },
        ping: async (timeoutMs) => {
          if (closing || lost) throw new StoreUnavailableError({ cause: new Error('listen connection closed') })
          const token = randomBytes(8).toString('hex')
          let timer: NodeJS.Timeout | undefined
          try {
            await new Promise<void>((resolve, reject) => {
              pings.set(token, resolve)
              timer = setTimeout(() => {
                reject(new StoreUnavailableError({ cause: new Error(`no heartbeat from the listen connection within ${timeoutMs} ms`) }))
              }, timeoutMs)
              // the round trip through the server's notification queue, not just the socket
              client.query('SELECT pg_notify($1, $2)', [heartbeatChannel, token]).catch((err: unknown) => { reject(translatePgError(err)) })
            })
          } finally {
            clearTimeout(timer)
            pings.delete(token)
          }
        },
      }
    },
    close: async () => {
      await Promise.all([...listeners].map(endClient))
      listeners.clear()
      await pool.end()
    },
  }
}
