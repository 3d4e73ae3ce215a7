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

/** a refresh token with its session and user, read under row locks */
export interface RefreshContext {
  token: RefreshTokenRecord
  session: SessionRecord
  user: UserRecord
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
}

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
  getSession: (sid: string) => Promise<SessionRecord | undefined>
  getRefreshToken: (tokenHash: string) => Promise<RefreshTokenRecord | undefined>
  /** the token with its session and user, locking the token and session rows (FOR UPDATE) */
  lockRefreshToken: (tokenHash: string) => Promise<RefreshContext | undefined>
  insertSession: (s: NewSession) => Promise<void>
  insertRefreshToken: (r: NewRefreshToken) => Promise<void>
  spendRefreshToken: (tokenHash: string, spentAt: Date, successorHash: string, successorSealed: string) => Promise<void>
  touchSession: (sid: string, at: Date, ip: string | null, userAgent: string | null) => Promise<void>
  /** marks a live session revoked; false when it was unknown or already revoked */
  revokeSession: (sid: string, at: Date, reason: string) => Promise<boolean>
  /** revokes every live session of a user; returns their ids */
  revokeUserSessions: (userId: string, at: Date, reason: string) => Promise<string[]>
  /** records a revocation and notifies every replica (delivered at commit) */
  insertRevocation: (entry: RevocationEntry, at: Date) => Promise<void>
}

export interface StoreListener {
  close: () => Promise<void>
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
  updateUser: (name: string, patch: UserPatch, at: Date) => Promise<UserRecord | undefined>
  listSessionsByUser: (userId: string) => Promise<SessionRecord[]>
  /** revocations that can still matter at `now` */
  loadRevocations: (now: Date) => Promise<RevocationEntry[]>
  /**
   * Subscribes to revocation notifications on a dedicated connection. `onLost` is
   * called once if that connection breaks; the subscriber must subscribe again and
   * reload, because notifications sent meanwhile are gone.
   */
  listenRevocations: (onPayload: (payload: string) => void, onLost: (err: Error) => void) => Promise<StoreListener>
  /**
   * Deletes sessions past their absolute expiry (with their tokens), expired refresh
   * tokens and expired revocations. Idempotent and cheap (indexed): safe to run from
   * every replica, e.g. hourly.
   */
  purgeExpired: (now: Date) => Promise<{ sessions: number, refreshTokens: number, revocations: number }>
  close: () => Promise<void>
}

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
}

export async function openStore (opts: OpenStoreOptions): Promise<Store> {
  const { SqlStore } = await import('./sql-store.js')
  let store: Store
  if (opts.url !== undefined && opts.url !== '') {
    const { createPgDriver } = await import('./pg-store.js')
    store = new SqlStore(createPgDriver({ url: opts.url, poolSize: opts.poolSize, logger: opts.logger }))
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
