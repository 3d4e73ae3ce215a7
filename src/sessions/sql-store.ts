/**
 * The one SQL implementation of Store, over a tiny driver interface that pg-store.ts
 * (pg Pool) and embedded-store.ts (PGlite) implement. Keeping the SQL here, once, is
 * what guarantees both backends behave the same.
 */
import type { RevocationEntry, RevocationKind } from '../pipeline/denylist.js'
import { UserExistsError } from './errors.js'
import { MIGRATION_LOCK_KEY, MIGRATIONS, USER_CREATION_LOCK_KEY } from './migrations.js'
import {
  REFRESH_COLUMNS, SESSION_COLUMNS, THROTTLE_COLUMNS, TOKEN_COLUMNS, USER_COLUMNS, toRefresh, toSession, toThrottle, toToken, toUser,
} from './sql-rows.js'
import type {
  LockedSession, NewRefreshToken, NewSession, NewUser, PurgeOptions, PurgeResult, RefreshContext, RefreshRotation,
  RefreshTokenRecord, SessionRecord, SessionRefreshState, Store, StoreListener, StoreQueries, ThrottleKind, ThrottleRow,
  UserPatch, UserRecord,
} from './store.js'
import { DEFAULT_REUSE_GRACE_SEC, REVOCATION_CHANNEL } from './store.js'
import { userNameKey } from './user-name-key.js'

export type Row = Record<string, unknown>

export interface SqlExecutor {
  query: (text: string, params?: unknown[]) => Promise<Row[]>
  /** runs several statements without parameters (migrations) */
  exec: (text: string) => Promise<void>
}

export interface SqlDriver extends SqlExecutor {
  readonly kind: 'postgres' | 'embedded'
  transaction: <T>(fn: (q: SqlExecutor) => Promise<T>) => Promise<T>
  /** one connection for the whole callback (session-level advisory locks), without the request timeouts (migrations) */
  withConnection: <T>(fn: (q: SqlExecutor) => Promise<T>) => Promise<T>
  listen: (channel: string, onPayload: (payload: string) => void, onLost: (err: Error) => void) => Promise<StoreListener>
  close: () => Promise<void>
}

const toSec = (d: Date): number => Math.floor(d.getTime() / 1000)

/**
 * Rows per statement when the revocation feed loads the table (loadRevocations): what one
 * statement costs must not grow with the table. Measured on PostgreSQL 15 (2 cores): a page of
 * 20,000 costs ~8 ms in the server and ~50 ms until pg has handed its rows over (10,000: ~30 ms,
 * 50,000: ~130 ms) — two orders below the 5 s statement_timeout, with room for a loaded machine
 * or a slow link, while the per-statement round trip and planning stay lost in the noise
 * (1 M rows: 3.3 s paged, 2.7 s as one statement). About 2 MB of rows are in flight at once.
 */
export const REVOCATION_LOAD_PAGE_ROWS = 20_000

/**
 * Rows per statement when expired rows are purged (purgeExpired): like the feed's load, no
 * statement may grow with what piled up — a purge that outlived statement_timeout failed every
 * time, so what it should delete piled up further (a mass logout, a long store outage, a
 * replica fleet that was down), and every load stepped over it (fix-purge-unbounded).
 */
export const PURGE_BATCH_ROWS = 10_000

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

  async lockUserShared (id: string): Promise<UserRecord | undefined> {
    const rows = await this.q.query(`SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $1 FOR SHARE`, [id])
    return rows[0] === undefined ? undefined : toUser(rows[0])
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

  async bumpCredentialsVersion (userId: string, at: Date): Promise<void> {
    await this.q.query('UPDATE users SET credentials_version = credentials_version + 1, updated_at = $2 WHERE id = $1', [userId, at])
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
      `SELECT ${TOKEN_COLUMNS}, ${SESSION_COLUMNS}, ${REFRESH_COLUMNS}, ${USER_COLUMNS}
         FROM refresh_tokens rt
         JOIN sessions s ON s.id = rt.session_id
         JOIN users u ON u.id = s.user_id
        WHERE rt.token_hash = $1
        FOR UPDATE OF rt, s`, [tokenHash])
    const r = rows[0]
    return r === undefined ? undefined : { token: toToken(r), session: toSession(r), refresh: toRefresh(r), user: toUser(r) }
  }

  async lockSession (sid: string): Promise<LockedSession | undefined> {
    // Only the session row is locked: a concurrent refresh of the same session waits here
    // and then re-reads the row (READ COMMITTED re-check). The user row is read, not
    // locked: a revocation locks users then sessions, so locking users here would invert
    // that order and could deadlock; the revocation's UPDATE of this session waits for us
    // instead and revokes it after we commit.
    const rows = await this.q.query(
      `SELECT ${SESSION_COLUMNS}, ${REFRESH_COLUMNS}, ${USER_COLUMNS}
         FROM sessions s JOIN users u ON u.id = s.user_id
        WHERE s.id = $1
        FOR UPDATE OF s`, [sid])
    const r = rows[0]
    return r === undefined ? undefined : { session: toSession(r), refresh: toRefresh(r), user: toUser(r) }
  }

  async getSessionRefresh (sid: string): Promise<SessionRefreshState | undefined> {
    const rows = await this.q.query(`SELECT ${REFRESH_COLUMNS} FROM sessions s WHERE s.id = $1`, [sid])
    return rows[0] === undefined ? undefined : toRefresh(rows[0])
  }

  async insertSession (s: NewSession): Promise<void> {
    await this.q.query(
      `INSERT INTO sessions (id, user_id, created_at, last_used_at, expires_at, user_agent, ip,
                             credentials_version, refresh_key, refresh_hash, refresh_issued_at, refresh_expires_at)
       VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $8, $9, $3, $10)`,
      [s.id, s.userId, s.createdAt, s.expiresAt, s.userAgent, s.ip, s.credentialsVersion, s.refreshKey, s.refreshHash, s.refreshExpiresAt])
  }

  async rotateSessionRefresh (sid: string, r: RefreshRotation, at: Date, ip: string | null, userAgent: string | null): Promise<void> {
    await this.q.query(
      `UPDATE sessions SET refresh_key = COALESCE(refresh_key, $2), refresh_hash = $3, refresh_issued_at = $4,
              refresh_expires_at = $5, refresh_prev_hash = $6, refresh_prev_issued_at = $7, refresh_prev_sealed = $8,
              refresh_prev_sealed_until = $9, last_used_at = $10, ip = COALESCE($11, ip), user_agent = COALESCE($12, user_agent)
        WHERE id = $1`,
      [sid, r.key, r.hash, r.issuedAt, r.expiresAt, r.prevHash, r.prevIssuedAt, r.prevSealed, r.prevSealedUntil, at, ip, userAgent])
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
    // the sessions locked in id order first, the order a logout naming several takes them
    // (service.ts logout), so the two never wait on each other in a cycle: the UPDATE alone
    // locks in scan order (fix-store-deadlocks-are-500)
    await this.q.query('SELECT id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL ORDER BY id COLLATE "C" FOR UPDATE', [userId])
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

  async lockThrottleRows (keys: ReadonlyArray<{ kind: ThrottleKind, key: string }>, at: Date, forgetAt: Date): Promise<ThrottleRow[]> {
    if (keys.length === 0) return []
    // One statement: missing rows are created, existing ones locked (ON CONFLICT DO UPDATE
    // takes the row lock and works on the latest committed version, so two replicas
    // counting the same key at once are serialised, never lost). Rows are processed in
    // VALUES order, which the caller keeps fixed (kind order) to avoid lock cycles.
    const params: unknown[] = [at, forgetAt]
    const values = keys.map((k) => {
      params.push(k.kind, k.key)
      return `($${params.length - 1}, $${params.length}, $1::timestamptz, 0, NULL::timestamptz, 0, $2::timestamptz, $1::timestamptz)`
    })
    const rows = await this.q.query(
      `INSERT INTO login_attempts AS l (kind, key, window_start, attempts, locked_until, lockouts, forget_at, updated_at)
       VALUES ${values.join(', ')}
       ON CONFLICT (kind, key) DO UPDATE SET updated_at = EXCLUDED.updated_at
       RETURNING ${THROTTLE_COLUMNS}`, params)
    return rows.map(toThrottle)
  }

  async saveThrottleRows (rows: readonly ThrottleRow[], at: Date): Promise<void> {
    if (rows.length === 0) return
    // one statement for all of them: a login pays for each round trip
    const params: unknown[] = [at]
    const values = rows.map((r) => {
      params.push(r.kind, r.key, r.windowStart, r.attempts, r.lockedUntil, r.lockouts, r.forgetAt)
      const n = params.length
      return `($${n - 6}::text, $${n - 5}::text, $${n - 4}::timestamptz, $${n - 3}::int, $${n - 2}::timestamptz, $${n - 1}::int, $${n}::timestamptz)`
    })
    await this.q.query(
      `UPDATE login_attempts AS l
          SET window_start = v.window_start, attempts = v.attempts, locked_until = v.locked_until, lockouts = v.lockouts,
              forget_at = v.forget_at, updated_at = $1
         FROM (VALUES ${values.join(', ')}) AS v (kind, key, window_start, attempts, locked_until, lockouts, forget_at)
        WHERE l.kind = v.kind AND l.key = v.key`, params)
  }

  async recordLoginSuccess (accountKey: string, ipKey: string | undefined, at: Date): Promise<void> {
    // The rows locked in kind order first, as lockThrottleRows takes them: the UPDATE alone
    // locks in scan order, and an address's row (shared by everyone behind it, usually older)
    // came before the account's — a login racing another's admission deadlocked, a 500
    // (fix-store-deadlocks-are-500)
    await this.q.query(
      `SELECT 1 FROM login_attempts WHERE (kind = 'account' AND key = $1) OR (kind = 'ip' AND key = $2)
        ORDER BY kind COLLATE "C" FOR UPDATE`, [accountKey, ipKey ?? null])
    // A lock that is running stays: it may have been set by someone else's guesses.
    await this.q.query(
      `UPDATE login_attempts
          SET attempts = CASE WHEN kind = 'account' THEN 0 ELSE GREATEST(attempts - 1, 0) END,
              lockouts = CASE WHEN kind = 'account' AND (locked_until IS NULL OR locked_until <= $3) THEN 0 ELSE lockouts END,
              updated_at = $3
        WHERE (kind = 'account' AND key = $1) OR (kind = 'ip' AND key = $2)`, [accountKey, ipKey ?? null, at])
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
      // The store's statement and lock timeouts guard requests, not this connection (the
      // driver's own, without them): waiting for another replica's migration, or building an
      // index on a big table, may take longer.
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
    // names are compared exactly at login, but the login throttle counts an account's attempts
    // under the name's key (user-name-key.ts: NFKC, lower case): two users whose names share a
    // key would share a lock, and one's successful logins reset the other's — unlimited
    // guesses on `alice` for whoever owns `Alice` or `Ａｌｉｃｅ` (fix-auth-review,
    // fix-user-name-key). Such a name is taken. The check and the insert hold one lock, so two
    // creations at once cannot both pass the check (READ COMMITTED: each statement's snapshot
    // is taken after the lock, so the second sees the first's committed row).
    const key = userNameKey(u.name)
    const taken = await this.#driver.transaction(async (q) => {
      await q.query('SELECT pg_advisory_xact_lock($1::bigint)', [USER_CREATION_LOCK_KEY])
      // rows written before migration 3, or by an older replica, get their key first (kept
      // when the name is refused: the transaction commits either way)
      for (const row of await q.query('SELECT id, name FROM users WHERE name_key IS NULL')) {
        await q.query('UPDATE users SET name_key = $1 WHERE id = $2', [userNameKey(row.name as string), row.id])
      }
      const holder = await q.query('SELECT name FROM users WHERE name_key = $1 LIMIT 1', [key])
      if (holder[0] !== undefined) return holder[0].name as string
      try {
        await q.query(
          `INSERT INTO users (id, name, name_key, password_hash, scopes, claims, disabled, created_at, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)`,
          [u.id, u.name, key, u.passwordHash, u.scopes, JSON.stringify(u.claims), u.disabled ?? false, at])
      } catch (err) {
        if ((err as { code?: unknown }).code === '23505') throw new UserExistsError(u.name, { cause: err })
        throw err
      }
      return undefined
    })
    if (taken !== undefined) throw new UserExistsError(u.name, { differsInCase: taken !== u.name })
    const user = await this.findUserById(u.id)
    if (user === undefined) throw new Error('user vanished after insert')
    return user
  }

  async listUsers (): Promise<UserRecord[]> {
    return (await this.q.query(`SELECT ${USER_COLUMNS} FROM users u ORDER BY u.name`)).map(toUser)
  }

  async listSessionsByUser (userId: string): Promise<SessionRecord[]> {
    return (await this.q.query(
      `SELECT ${SESSION_COLUMNS} FROM sessions s WHERE s.user_id = $1 ORDER BY s.created_at DESC, s.id`, [userId])).map(toSession)
  }

  /**
   * Every live revocation, read in keyset pages of REVOCATION_LOAD_PAGE_ROWS along the primary
   * key: each statement reads at most one page, so none grows with the table and each fits
   * within the pool's statement_timeout and read timeout. As one statement the load outlived
   * them once the table was large (3 M live rows: every attempt cut off after 7 s), and a
   * replica could neither start nor recover from a blip (fix-feed-catchup-unbounded).
   *
   * The pages are separate statements, each with its own snapshot — no transaction holds them
   * together, and none is needed:
   * - the revocation feed LISTENs before it loads (revocation-feed.ts), and a revocation's
   *   NOTIFY is sent in the transaction that inserts it (insertRevocation). A row a page does
   *   not see — committed after that page's snapshot, whatever its id, including an id below
   *   the cursor that was drawn earlier and committed late — was committed after the LISTEN,
   *   so it arrives as a notification;
   * - rows are never updated, so an id's row (and its expires_at) is the same in every page;
   * - a row purged between pages had expired (purgeExpired deletes expires_at < now): it
   *   could no longer revoke a valid token, whether the load kept it or not.
   * Expired rows not purged yet are stepped over by `expires_at > $1` inside a page's index
   * scan: they cost a page time, not rows. The purge runs every 5 minutes (app.ts) while rows
   * live for their token's lifetime (an hour for a session's), so they are a small share of
   * the table, and each is stepped over once per load, not once per page.
   */
  async loadRevocations (now: Date, signal?: AbortSignal): Promise<RevocationEntry[]> {
    const entries: RevocationEntry[] = []
    // ids are bigserial from 1; the cursor is kept as text (pg returns int8 as a string, PGlite as a number)
    let afterId = '0'
    for (;;) {
      // a load its feed gave up on (an attempt past its deadline) stops paging: it would
      // otherwise read the whole table beside the attempt that replaces it
      signal?.throwIfAborted()
      const rows = await this.q.query(
        `SELECT id, kind, value, expires_at, issued_before FROM revocations
          WHERE expires_at > $1 AND id > $2 ORDER BY id LIMIT $3`, [now, afterId, REVOCATION_LOAD_PAGE_ROWS])
      for (const r of rows) {
        const entry: RevocationEntry = { kind: r.kind as RevocationKind, value: r.value as string, expiresAtSec: toSec(r.expires_at as Date) }
        if (r.issued_before instanceof Date) entry.issuedBeforeSec = toSec(r.issued_before)
        entries.push(entry)
      }
      const last = rows[rows.length - 1]
      if (rows.length < REVOCATION_LOAD_PAGE_ROWS || last === undefined) return entries
      afterId = String(last.id)
    }
  }

  async listenRevocations (onPayload: (payload: string) => void, onLost: (err: Error) => void): Promise<StoreListener> {
    return await this.#driver.listen(REVOCATION_CHANNEL, onPayload, onLost)
  }

  async purgeExpired (now: Date, opts: PurgeOptions = {}): Promise<PurgeResult> {
    // A session past its absolute expiry can never refresh again: it goes, with its
    // legacy token rows (ON DELETE CASCADE). A spent legacy token of a live session is
    // kept until its own expiry: presenting it later must still be recognised as reuse
    // (theft), not answered as "unknown". Session-format tokens need no row to be
    // recognised (refresh-tokens.ts): nothing per rotation is left to purge.
    const graceEnd = new Date(now.getTime() - (opts.reuseGraceSec ?? DEFAULT_REUSE_GRACE_SEC) * 1000)
    // each in batches of PURGE_BATCH_ROWS, picked by key through the table's index on its
    // condition; one statement per batch, each committed on its own
    const batches = async (change: string, table: string, key: string, where: string, at: Date): Promise<number> => {
      let total = 0
      for (;;) {
        const rows = await this.q.query(
          `${change} WHERE ${key} IN (SELECT ${key} FROM ${table} WHERE ${where} LIMIT ${PURGE_BATCH_ROWS}) RETURNING 1`, [at])
        total += rows.length
        if (rows.length < PURGE_BATCH_ROWS) return total
      }
    }
    const s = await batches('DELETE FROM sessions', 'sessions', 'id', 'expires_at < $1', now)
    const rt = await batches('DELETE FROM refresh_tokens', 'refresh_tokens', 'token_hash', 'expires_at < $1', now)
    const rv = await batches('DELETE FROM revocations', 'revocations', 'id', 'expires_at < $1', now)
    // a sealed successor serves only the grace window; afterwards it is a liability (it
    // opens with a spent token that may leak later), so it goes
    const sealed = await batches('UPDATE sessions SET refresh_prev_sealed = NULL, refresh_prev_sealed_until = NULL', 'sessions', 'id',
      'refresh_prev_sealed_until IS NOT NULL AND refresh_prev_sealed_until < $1', now)
    const legacySealed = await batches('UPDATE refresh_tokens SET successor_sealed = NULL', 'refresh_tokens', 'token_hash',
      'successor_sealed IS NOT NULL AND spent_at < $1', graceEnd)
    return { sessions: s, refreshTokens: rt, revocations: rv, sealedSuccessors: sealed + legacySealed }
  }

  async countThrottleRows (): Promise<number> {
    return (await this.q.query('SELECT count(*)::int AS n FROM login_attempts'))[0]?.n as number
  }

  async pruneThrottle (now: Date, maxEntries: number): Promise<number> {
    const expired = await this.q.query('DELETE FROM login_attempts WHERE forget_at <= $1 RETURNING 1', [now])
    // Beyond the bound, the rows that hold least go first: unlocked before locked, then the
    // shortest backoff streak, then the fewest attempts, then the least recently touched. A
    // sprayer filling the table with fresh keys (one attempt each) must not evict the lock of
    // the account it attacks, nor the count of one part-way to its lock
    // (fix-throttle-eviction-resets-count: evicted by age alone, it started again from zero).
    const excess = await this.q.query(
      `DELETE FROM login_attempts WHERE (kind, key) IN (
         SELECT kind, key FROM login_attempts
          ORDER BY (locked_until IS NOT NULL AND locked_until > $1), lockouts, attempts, updated_at
          LIMIT GREATEST((SELECT count(*) FROM login_attempts) - $2, 0))
       RETURNING 1`, [now, maxEntries])
    return expired.length + excess.length
  }

  async close (): Promise<void> {
    await this.#driver.close()
  }
}
