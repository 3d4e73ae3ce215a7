/**
 * The one SQL implementation of Store, over a tiny driver interface that pg-store.ts
 * (pg Pool) and embedded-store.ts (PGlite) implement. Keeping the SQL here, once, is
 * what guarantees both backends behave the same.
 */
import type { RevocationEntry, RevocationKind } from '../pipeline/denylist.js'
import { UserExistsError } from './errors.js'
import { MIGRATION_LOCK_KEY, MIGRATIONS } from './migrations.js'
import type {
  NewRefreshToken, NewSession, NewUser, RefreshContext, RefreshTokenRecord, SessionRecord,
  Store, StoreListener, StoreQueries, UserPatch, UserRecord,
} from './store.js'
import { REVOCATION_CHANNEL } from './store.js'

export type Row = Record<string, unknown>

export interface SqlExecutor {
  query: (text: string, params?: unknown[]) => Promise<Row[]>
  /** runs several statements without parameters (migrations) */
  exec: (text: string) => Promise<void>
}

export interface SqlDriver extends SqlExecutor {
  readonly kind: 'postgres' | 'embedded'
  transaction: <T>(fn: (q: SqlExecutor) => Promise<T>) => Promise<T>
  /** one connection for the whole callback (session-level advisory locks) */
  withConnection: <T>(fn: (q: SqlExecutor) => Promise<T>) => Promise<T>
  listen: (channel: string, onPayload: (payload: string) => void, onLost: (err: Error) => void) => Promise<StoreListener>
  close: () => Promise<void>
}

const USER_COLUMNS = 'u.id AS u_id, u.name AS u_name, u.password_hash AS u_password_hash, u.scopes AS u_scopes, ' +
  'u.claims AS u_claims, u.disabled AS u_disabled, u.created_at AS u_created_at, u.updated_at AS u_updated_at'
const SESSION_COLUMNS = 's.id AS s_id, s.user_id AS s_user_id, s.created_at AS s_created_at, s.last_used_at AS s_last_used_at, ' +
  's.expires_at AS s_expires_at, s.user_agent AS s_user_agent, s.ip AS s_ip, s.revoked_at AS s_revoked_at, s.revoke_reason AS s_revoke_reason'
const TOKEN_COLUMNS = 'rt.token_hash AS rt_token_hash, rt.session_id AS rt_session_id, rt.created_at AS rt_created_at, ' +
  'rt.expires_at AS rt_expires_at, rt.spent_at AS rt_spent_at, rt.successor_hash AS rt_successor_hash, rt.successor_sealed AS rt_successor_sealed'

function toUser (r: Row): UserRecord {
  return {
    id: r.u_id as string,
    name: r.u_name as string,
    passwordHash: r.u_password_hash as string,
    scopes: r.u_scopes as string[],
    claims: r.u_claims as Record<string, unknown>,
    disabled: r.u_disabled as boolean,
    createdAt: r.u_created_at as Date,
    updatedAt: r.u_updated_at as Date,
  }
}

function toSession (r: Row): SessionRecord {
  return {
    id: r.s_id as string,
    userId: r.s_user_id as string,
    createdAt: r.s_created_at as Date,
    lastUsedAt: r.s_last_used_at as Date,
    expiresAt: r.s_expires_at as Date,
    userAgent: r.s_user_agent as string | null,
    ip: r.s_ip as string | null,
    revokedAt: r.s_revoked_at as Date | null,
    revokeReason: r.s_revoke_reason as string | null,
  }
}

function toToken (r: Row): RefreshTokenRecord {
  return {
    tokenHash: r.rt_token_hash as string,
    sessionId: r.rt_session_id as string,
    createdAt: r.rt_created_at as Date,
    expiresAt: r.rt_expires_at as Date,
    spentAt: r.rt_spent_at as Date | null,
    successorHash: r.rt_successor_hash as string | null,
    successorSealed: r.rt_successor_sealed as string | null,
  }
}

const toSec = (d: Date): number => Math.floor(d.getTime() / 1000)

/** the notification payload; parsed by the revocation feed */
export function revocationPayload (entry: RevocationEntry): string {
  return JSON.stringify(entry)
}

class SqlQueries implements StoreQueries {
  protected readonly q: SqlExecutor
  constructor (q: SqlExecutor) {
    this.q = q
  }

  async findUserByName (name: string): Promise<UserRecord | undefined> {
    const rows = await this.q.query(`SELECT ${USER_COLUMNS} FROM users u WHERE u.name = $1`, [name])
    return rows[0] === undefined ? undefined : toUser(rows[0])
  }

  async findUserById (id: string): Promise<UserRecord | undefined> {
    const rows = await this.q.query(`SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $1`, [id])
    return rows[0] === undefined ? undefined : toUser(rows[0])
  }

  async getSession (sid: string): Promise<SessionRecord | undefined> {
    const rows = await this.q.query(`SELECT ${SESSION_COLUMNS} FROM sessions s WHERE s.id = $1`, [sid])
    return rows[0] === undefined ? undefined : toSession(rows[0])
  }

  async getRefreshToken (tokenHash: string): Promise<RefreshTokenRecord | undefined> {
    const rows = await this.q.query(`SELECT ${TOKEN_COLUMNS} FROM refresh_tokens rt WHERE rt.token_hash = $1`, [tokenHash])
    return rows[0] === undefined ? undefined : toToken(rows[0])
  }

  async lockRefreshToken (tokenHash: string): Promise<RefreshContext | undefined> {
    // Locks the token row and its session row: a concurrent refresh of the same token
    // waits here, then re-reads the row and sees it spent (READ COMMITTED re-check).
    const rows = await this.q.query(
      `SELECT ${TOKEN_COLUMNS}, ${SESSION_COLUMNS}, ${USER_COLUMNS}
         FROM refresh_tokens rt
         JOIN sessions s ON s.id = rt.session_id
         JOIN users u ON u.id = s.user_id
        WHERE rt.token_hash = $1
        FOR UPDATE OF rt, s`, [tokenHash])
    const r = rows[0]
    return r === undefined ? undefined : { token: toToken(r), session: toSession(r), user: toUser(r) }
  }

  async insertSession (s: NewSession): Promise<void> {
    await this.q.query(
      `INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip)
       VALUES ($1, $2, $3, $3, $4, $5, $6)`,
      [s.id, s.userId, s.createdAt, s.expiresAt, s.userAgent, s.ip])
  }

  async insertRefreshToken (r: NewRefreshToken): Promise<void> {
    await this.q.query(
      'INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at) VALUES ($1, $2, $3, $4)',
      [r.tokenHash, r.sessionId, r.createdAt, r.expiresAt])
  }

  async spendRefreshToken (tokenHash: string, spentAt: Date, successorHash: string, successorSealed: string): Promise<void> {
    await this.q.query(
      'UPDATE refresh_tokens SET spent_at = $2, successor_hash = $3, successor_sealed = $4 WHERE token_hash = $1',
      [tokenHash, spentAt, successorHash, successorSealed])
  }

  async touchSession (sid: string, at: Date, ip: string | null, userAgent: string | null): Promise<void> {
    await this.q.query(
      `UPDATE sessions SET last_used_at = $2, ip = COALESCE($3, ip), user_agent = COALESCE($4, user_agent)
        WHERE id = $1`, [sid, at, ip, userAgent])
  }

  async revokeSession (sid: string, at: Date, reason: string): Promise<boolean> {
    const rows = await this.q.query(
      'UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE id = $1 AND revoked_at IS NULL RETURNING id',
      [sid, at, reason])
    return rows.length > 0
  }

  async revokeUserSessions (userId: string, at: Date, reason: string): Promise<string[]> {
    const rows = await this.q.query(
      'UPDATE sessions SET revoked_at = $2, revoke_reason = $3 WHERE user_id = $1 AND revoked_at IS NULL RETURNING id',
      [userId, at, reason])
    return rows.map((r) => r.id as string)
  }

  async insertRevocation (entry: RevocationEntry, at: Date): Promise<void> {
    await this.q.query(
      'INSERT INTO revocations (kind, value, expires_at, issued_before, created_at) VALUES ($1, $2, $3, $4, $5)',
      [entry.kind, entry.value, new Date(entry.expiresAtSec * 1000),
        entry.issuedBeforeSec === undefined ? null : new Date(entry.issuedBeforeSec * 1000), at])
    // NOTIFY inside the transaction is delivered only at COMMIT, and not at all on
    // rollback: replicas never hear of a revocation that did not happen.
    await this.q.query('SELECT pg_notify($1, $2)', [REVOCATION_CHANNEL, revocationPayload(entry)])
  }
}

export class SqlStore extends SqlQueries implements Store {
  readonly #driver: SqlDriver
  readonly kind: 'postgres' | 'embedded'

  constructor (driver: SqlDriver) {
    super(driver)
    this.#driver = driver
    this.kind = driver.kind
  }

  async migrate (): Promise<number[]> {
    return await this.#driver.withConnection(async (q) => {
      // Session-level lock: a second replica waits here until the first has finished,
      // then finds every version applied. Released explicitly (and by disconnect).
      await q.query('SELECT pg_advisory_lock($1::bigint)', [MIGRATION_LOCK_KEY])
      try {
        await q.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
          version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
        const done = new Set((await q.query('SELECT version FROM schema_migrations')).map((r) => Number(r.version)))
        const applied: number[] = []
        for (const m of MIGRATIONS) {
          if (done.has(m.version)) continue
          await q.exec('BEGIN')
          try {
            await q.exec(m.sql)
            await q.query('INSERT INTO schema_migrations (version, name) VALUES ($1, $2)', [m.version, m.name])
            await q.exec('COMMIT')
          } catch (err) {
            await q.exec('ROLLBACK').catch(() => {})
            throw err
          }
          applied.push(m.version)
        }
        return applied
      } finally {
        await q.query('SELECT pg_advisory_unlock($1::bigint)', [MIGRATION_LOCK_KEY]).catch(() => {})
      }
    })
  }

  async transaction<T> (fn: (tx: StoreQueries) => Promise<T>): Promise<T> {
    return await this.#driver.transaction(async (q) => await fn(new SqlQueries(q)))
  }

  async createUser (u: NewUser, at: Date): Promise<UserRecord> {
    try {
      await this.q.query(
        `INSERT INTO users (id, name, password_hash, scopes, claims, disabled, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)`,
        [u.id, u.name, u.passwordHash, u.scopes, JSON.stringify(u.claims), u.disabled ?? false, at])
    } catch (err) {
      if ((err as { code?: unknown }).code === '23505') throw new UserExistsError(u.name, { cause: err })
      throw err
    }
    const user = await this.findUserById(u.id)
    if (user === undefined) throw new Error('user vanished after insert')
    return user
  }

  async listUsers (): Promise<UserRecord[]> {
    return (await this.q.query(`SELECT ${USER_COLUMNS} FROM users u ORDER BY u.name`)).map(toUser)
  }

  async updateUser (name: string, patch: UserPatch, at: Date): Promise<UserRecord | undefined> {
    const sets: string[] = ['updated_at = $2']
    const params: unknown[] = [name, at]
    const add = (column: string, value: unknown): void => {
      params.push(value)
      sets.push(`${column} = $${params.length}`)
    }
    if (patch.passwordHash !== undefined) add('password_hash', patch.passwordHash)
    if (patch.scopes !== undefined) add('scopes', patch.scopes)
    if (patch.claims !== undefined) add('claims', JSON.stringify(patch.claims))
    if (patch.disabled !== undefined) add('disabled', patch.disabled)
    const rows = await this.q.query(`UPDATE users SET ${sets.join(', ')} WHERE name = $1 RETURNING id`, params)
    const id = rows[0]?.id
    return typeof id === 'string' ? await this.findUserById(id) : undefined
  }

  async listSessionsByUser (userId: string): Promise<SessionRecord[]> {
    return (await this.q.query(
      `SELECT ${SESSION_COLUMNS} FROM sessions s WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id`, [userId])).map(toSession)
  }

  async loadRevocations (now: Date): Promise<RevocationEntry[]> {
    const rows = await this.q.query(
      'SELECT kind, value, expires_at, issued_before FROM revocations WHERE expires_at > $1 ORDER BY id', [now])
    return rows.map((r) => {
      const entry: RevocationEntry = { kind: r.kind as RevocationKind, value: r.value as string, expiresAtSec: toSec(r.expires_at as Date) }
      if (r.issued_before instanceof Date) entry.issuedBeforeSec = toSec(r.issued_before)
      return entry
    })
  }

  async listenRevocations (onPayload: (payload: string) => void, onLost: (err: Error) => void): Promise<StoreListener> {
    return await this.#driver.listen(REVOCATION_CHANNEL, onPayload, onLost)
  }

  async purgeExpired (now: Date): Promise<{ sessions: number, refreshTokens: number, revocations: number }> {
    // A session past its absolute expiry can never refresh again: it goes, with its
    // token family (ON DELETE CASCADE). A spent token of a live session is kept until
    // its own expiry: presenting it later must still be recognised as reuse (theft),
    // not answered as "unknown".
    const s = await this.q.query('DELETE FROM sessions WHERE expires_at < $1 RETURNING 1', [now])
    const rt = await this.q.query('DELETE FROM refresh_tokens WHERE expires_at < $1 RETURNING 1', [now])
    const rv = await this.q.query('DELETE FROM revocations WHERE expires_at < $1 RETURNING 1', [now])
    return { sessions: s.length, refreshTokens: rt.length, revocations: rv.length }
  }

  async close (): Promise<void> {
    await this.#driver.close()
  }
}
