/**
 * The session store: one interface over PostgreSQL (`pg` Pool) and embedded PGlite.
 * Both run the very same SQL (sql-store.ts) and migrations (migrations.ts); only the
 * driver underneath differs (pg-store.ts, embedded-store.ts). Every method throws
 * StoreUnavailableError when the database cannot be reached.
 */
import type { RevocationEntry } from '../pipeline/denylist.js'

export interface UserRecord {
  /** stable id, used as the token `sub` (names may be reused after a delete) */
  id: string
  name: string
  passwordHash: string
  scopes: string[]
  /** extra claims copied into access tokens (roles, tenant, …) */
  claims: Record<string, unknown>
  disabled: boolean
  /** bumped whenever the user's sessions are revoked (password change, disable, logout-all, admin) */
  credentialsVersion: number
  createdAt: Date
  updatedAt: Date
}

export interface SessionRecord {
  /** the `sid` claim */
  id: string
  userId: string
  createdAt: Date
  lastUsedAt: Date
  /** absolute end of the session (sessionMaxAge): refresh never extends it */
  expiresAt: Date
  userAgent: string | null
  ip: string | null
  revokedAt: Date | null
  revokeReason: string | null
}

export interface RefreshTokenRecord {
  /** SHA-256 of the token, base64url: the plaintext is never stored */
  tokenHash: string
  sessionId: string
  createdAt: Date
  expiresAt: Date
  spentAt: Date | null
  successorHash: string | null
  /** successor plaintext sealed under a key only the holder of this token can derive */
  successorSealed: string | null
}

/** a legacy refresh token with its session and user, read under row locks */
export interface RefreshContext {
  token: RefreshTokenRecord
  session: SessionRecord
  user: UserRecord
  refresh: SessionRefreshState
}

/**
 * The refresh state kept on the session row (migration 2): the current token's hash and
 * the previous one's, for the grace window. Never shown to operators.
 */
export interface SessionRefreshState {
  /** the user's credentials version when the session was made; refresh refuses a mismatch */
  credentialsVersion: number
  /** per-session HMAC key of the family tag; null for a legacy session not yet rotated */
  key: string | null
  hash: string | null
  issuedAt: Date | null
  expiresAt: Date | null
  prevHash: string | null
  prevIssuedAt: Date | null
  /** the current token sealed under the previous one, until prevSealedUntil */
  prevSealed: string | null
  prevSealedUntil: Date | null
}

/** a session with its refresh state and user, the session row locked (FOR UPDATE) */
export interface LockedSession {
  session: SessionRecord
  refresh: SessionRefreshState
  user: UserRecord
}

/** the refresh columns written by a rotation */
export interface RefreshRotation {
  /** set when the session has none yet (a legacy session moving to the session format) */
  key: string
  hash: string
  issuedAt: Date
  expiresAt: Date
  prevHash: string
  prevIssuedAt: Date | null
  prevSealed: string
  prevSealedUntil: Date
}

export interface NewUser {
  id: string
  name: string
  passwordHash: string
  scopes: string[]
  claims: Record<string, unknown>
  disabled?: boolean
}

export interface UserPatch {
  passwordHash?: string
  scopes?: string[]
  claims?: Record<string, unknown>
  disabled?: boolean
}

export interface NewSession {
  id: string
  userId: string
  createdAt: Date
  expiresAt: Date
  userAgent: string | null
  ip: string | null
  /** the user's credentials version read (and locked) in the same transaction */
  credentialsVersion: number
  refreshKey: string
  refreshHash: string
  refreshExpiresAt: Date
}

/** one throttle counter (login_attempts row) */
export interface ThrottleRow {
  kind: ThrottleKind
  key: string
  windowStart: Date
  attempts: number
  lockedUntil: Date | null
  lockouts: number
  forgetAt: Date
}

export const ThrottleKind = {
  account: 'account',
  ip: 'ip',
  ipTotal: 'ip_total',
  /** logouts that revoke an identity provider's token (foreign-revocations.ts) */
  foreignRevocation: 'foreign_revocation',
} as const
export type ThrottleKind = typeof ThrottleKind[keyof typeof ThrottleKind]

export interface NewRefreshToken {
  tokenHash: string
  sessionId: string
  createdAt: Date
  expiresAt: Date
}

/** the queries available both inside and outside a transaction */
export interface StoreQueries {
  findUserByName: (name: string) => Promise<UserRecord | undefined>
  findUserById: (id: string) => Promise<UserRecord | undefined>
  /** the user row under FOR SHARE: a concurrent revocation (which updates it) waits, or is waited for */
  lockUserShared: (id: string) => Promise<UserRecord | undefined>
  updateUser: (name: string, patch: UserPatch, at: Date) => Promise<UserRecord | undefined>
  /** +1 on the user's credentials version; called with every revocation of all their sessions */
  bumpCredentialsVersion: (userId: string, at: Date) => Promise<void>
  getSession: (sid: string) => Promise<SessionRecord | undefined>
  getRefreshToken: (tokenHash: string) => Promise<RefreshTokenRecord | undefined>
  /** a legacy token with its session and user, locking the token and session rows (FOR UPDATE) */
  lockRefreshToken: (tokenHash: string) => Promise<RefreshContext | undefined>
  /** a session with its refresh state and user, locking the session row (FOR UPDATE) */
  lockSession: (sid: string) => Promise<LockedSession | undefined>
  /** the session's refresh state (no lock) */
  getSessionRefresh: (sid: string) => Promise<SessionRefreshState | undefined>
  insertSession: (s: NewSession) => Promise<void>
  /** legacy rows only (tests of the migration path): the service no longer writes them */
  insertRefreshToken: (r: NewRefreshToken) => Promise<void>
  spendRefreshToken: (tokenHash: string, spentAt: Date, successorHash: string, successorSealed: string) => Promise<void>
  /** writes a rotation on the session row and marks it used, in one statement */
  rotateSessionRefresh: (sid: string, r: RefreshRotation, at: Date, ip: string | null, userAgent: string | null) => Promise<void>
  touchSession: (sid: string, at: Date, ip: string | null, userAgent: string | null) => Promise<void>
  /** marks a live session revoked; false when it was unknown or already revoked */
  revokeSession: (sid: string, at: Date, reason: string) => Promise<boolean>
  /** revokes every live session of a user; returns their ids */
  revokeUserSessions: (userId: string, at: Date, reason: string) => Promise<string[]>
  /** records a revocation and notifies every replica (delivered at commit) */
  insertRevocation: (entry: RevocationEntry, at: Date) => Promise<void>
  /**
   * The throttle rows of these keys, created when missing, each locked (FOR UPDATE, via
   * INSERT … ON CONFLICT DO UPDATE) until the transaction ends. Keys are locked in the
   * order given; callers pass them in kind order (account, ip, ip_total) so two attempts
   * never wait on each other in a cycle.
   */
  lockThrottleRows: (keys: ReadonlyArray<{ kind: ThrottleKind, key: string }>, at: Date, forgetAt: Date) => Promise<ThrottleRow[]>
  saveThrottleRows: (rows: readonly ThrottleRow[], at: Date) => Promise<void>
  /** a verified login: the account counter restarts, the address's failure counter gives one back */
  recordLoginSuccess: (accountKey: string, ipKey: string | undefined, at: Date) => Promise<void>
}

/** what a listen subscription offers besides closing it */
export interface StoreListener {
  close: () => Promise<void>
  /**
   * Proves the subscription still delivers: a NOTIFY to itself on the listen connection,
   * resolved when it comes back (PostgreSQL delivers notifications in commit order, so
   * everything committed before it has been delivered too). Rejects after `timeoutMs`.
   */
  ping: (timeoutMs: number) => Promise<void>
}

export interface Store extends StoreQueries {
  readonly kind: 'postgres' | 'embedded'
  /** applies pending migrations under an advisory lock; returns the versions applied */
  migrate: () => Promise<number[]>
  /** runs `fn` in one transaction (READ COMMITTED); rolls back if it throws */
  transaction: <T>(fn: (tx: StoreQueries) => Promise<T>) => Promise<T>
  /** throws UserExistsError when the name is taken */
  createUser: (u: NewUser, at: Date) => Promise<UserRecord>
  listUsers: () => Promise<UserRecord[]>
  listSessionsByUser: (userId: string) => Promise<SessionRecord[]>
  /** revocations that can still matter at `now`; `signal` stops a load (paged) between two pages */
  loadRevocations: (now: Date, signal?: AbortSignal) => Promise<RevocationEntry[]>
  /**
   * Subscribes to revocation notifications on a dedicated connection. `onLost` is
   * called once if that connection breaks; the subscriber must subscribe again and
   * reload, because notifications sent meanwhile are gone.
   */
  listenRevocations: (onPayload: (payload: string) => void, onLost: (err: Error) => void) => Promise<StoreListener>
  /**
   * Deletes sessions past their absolute expiry (with their tokens), expired legacy refresh
   * tokens and expired revocations, and drops sealed successors whose grace window is over.
   * Idempotent and cheap (indexed): safe to run from every replica, e.g. every few minutes.
   */
  purgeExpired: (now: Date, opts?: PurgeOptions) => Promise<PurgeResult>
  /**
   * Drops throttle rows that hold nothing any more, then, beyond `maxEntries`, the ones that
   * hold least (unlocked first, then by backoff streak, attempts, and last touch). Returns
   * how many went.
   */
  pruneThrottle: (now: Date, maxEntries: number) => Promise<number>
  /** rows in the throttle table (a gauge for metrics; tests) */
  countThrottleRows: () => Promise<number>
  close: () => Promise<void>
}

export interface PurgeOptions {
  /** the reuse grace window: sealed successors of legacy rows older than this are dropped */
  reuseGraceSec?: number
}

export interface PurgeResult {
  sessions: number
  refreshTokens: number
  revocations: number
  /** sealed successors dropped (session rows and legacy rows) */
  sealedSuccessors: number
}

/** the default reuse grace, for a purge called without one (the service passes its own) */
export const DEFAULT_REUSE_GRACE_SEC = 10

export const REVOCATION_CHANNEL = 'portcullis_revocations'

/** pino-compatible; the store logs only connection trouble, never query parameters */
export interface SessionsLogger {
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
  error: (obj: object, msg?: string) => void
}

export const DEFAULT_DATA_DIR = './data'

export interface OpenStoreOptions {
  /** PostgreSQL URL; empty or undefined → embedded PGlite in `dataDir` */
  url?: string | undefined
  /** embedded store directory (default ./data); `memory://` keeps it in memory */
  dataDir?: string | undefined
  logger?: SessionsLogger | undefined
  /** run pending migrations at open (default true) */
  migrate?: boolean | undefined
  /** pg pool size (default 10) */
  poolSize?: number | undefined
  /** PostgreSQL statement_timeout of every pooled connection (database.statementTimeoutMs; 0 = none) */
  statementTimeoutMs?: number | undefined
  /** PostgreSQL lock_timeout of every pooled connection (database.lockTimeoutMs; 0 = none) */
  lockTimeoutMs?: number | undefined
  /**
   * URL of the LISTEN connection of the revocation feed, when it must bypass a pooler in
   * transaction mode (LISTEN needs a session); default: `url`
   */
  listenUrl?: string | undefined
}

export async function openStore (opts: OpenStoreOptions): Promise<Store> {
  const { SqlStore } = await import('./sql-store.js')
  let store: Store
  if (opts.url !== undefined && opts.url !== '') {
    const { createPgDriver } = await import('./pg-store.js')
    store = new SqlStore(createPgDriver({
      url: opts.url,
      listenUrl: opts.listenUrl,
      poolSize: opts.poolSize,
      statementTimeoutMs: opts.statementTimeoutMs,
      lockTimeoutMs: opts.lockTimeoutMs,
      logger: opts.logger,
    }))
  } else {
    // loaded only when used: PGlite is a large WASM module
    const { createEmbeddedDriver } = await import('./embedded-store.js')
    store = new SqlStore(await createEmbeddedDriver({ dataDir: opts.dataDir ?? DEFAULT_DATA_DIR }))
  }
  if (opts.migrate ?? true) {
    try {
      await store.migrate()
    } catch (err) {
      await store.close().catch(() => {})
      throw err
    }
  }
  return store
}
