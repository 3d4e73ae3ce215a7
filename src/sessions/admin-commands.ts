/**
 * The `portcullis users|sessions|migrate` commands as plain functions: src/cli.ts
 * parses arguments, reads passwords with readPassword(), calls these and prints the
 * result. They return data, never a password hash or a token.
 */
import type { SecurityEvents } from '../security-events.js'
import { SessionNotFoundError, UserNotFoundError } from './errors.js'
import { REVOCATION_TIMING, revokeSessionTx, revokeUserTx, RevokeReason } from './revoke.js'
import type { RevocationTiming } from './revoke.js'
import { toSessionInfos } from './service.js'
import type { SessionInfo } from './service.js'
import { openStore } from './store.js'
import type { OpenStoreOptions, Store, UserRecord } from './store.js'
import { addUser, setClaims, setDisabled, setPassword, setScopes } from './users.js'

export interface AdminOptions {
  clock?: () => number
  /** revocations made by a command are security events (user_revoked, session_revoked) */
  events?: SecurityEvents | undefined
}

/** a user as shown to operators: everything but the password hash */
export interface UserSummary {
  id: string
  name: string
  scopes: string[]
  claims: Record<string, unknown>
  disabled: boolean
  createdAt: Date
  updatedAt: Date
}

function summary (u: UserRecord): UserSummary {
  return { id: u.id, name: u.name, scopes: u.scopes, claims: u.claims, disabled: u.disabled, createdAt: u.createdAt, updatedAt: u.updatedAt }
}

function resolve (opts: AdminOptions = {}): { now: number, timing: RevocationTiming } {
  return {
    now: (opts.clock ?? Date.now)(),
    // sized by the limits of any configuration (revoke.ts), not by one gateway's TTL
    timing: REVOCATION_TIMING,
  }
}

export async function usersAdd (store: Store, input: { name: string, password: string, scopes?: string[], claims?: Record<string, unknown>, disabled?: boolean }, opts?: AdminOptions): Promise<UserSummary> {
  return summary(await addUser(store, input, resolve(opts).now))
}

export async function usersList (store: Store): Promise<UserSummary[]> {
  return (await store.listUsers()).map(summary)
}

/** disables the user and revokes all their sessions and access tokens */
export async function usersDisable (store: Store, name: string, opts?: AdminOptions): Promise<UserSummary> {
  const { now, timing } = resolve(opts)
  return summary(await setDisabled(store, name, true, now, timing, { events: opts?.events }))
}

export async function usersEnable (store: Store, name: string, opts?: AdminOptions): Promise<UserSummary> {
  const { now, timing } = resolve(opts)
  return summary(await setDisabled(store, name, false, now, timing))
}

/** sets a new password; the user's sessions are revoked unless keepSessions */
export async function usersPasswd (store: Store, name: string, password: string, opts?: AdminOptions & { keepSessions?: boolean }): Promise<UserSummary> {
  const { now, timing } = resolve(opts)
  return summary(await setPassword(store, name, password, now, timing, { revokeSessions: opts?.keepSessions !== true, events: opts?.events }))
}

export async function usersSetScopes (store: Store, name: string, scopes: string[], opts?: AdminOptions): Promise<UserSummary> {
  return summary(await setScopes(store, name, scopes, resolve(opts).now))
}

export async function usersSetClaims (store: Store, name: string, claims: Record<string, unknown>, opts?: AdminOptions): Promise<UserSummary> {
  return summary(await setClaims(store, name, claims, resolve(opts).now))
}

/**
 * Changes some claims: `set` adds or replaces keys, `unset` removes keys; with `replace`
 * the user's claims become exactly `set`. Validated as a whole (reserved names, size).
 * Takes effect on the next access token (login or refresh).
 */
export async function usersUpdateClaims (store: Store, name: string,
  change: { set?: Record<string, unknown>, unset?: string[], replace?: boolean }, opts?: AdminOptions): Promise<UserSummary> {
  const user = await store.findUserByName(name)
  if (user === undefined) throw new UserNotFoundError(name)
  const next: Record<string, unknown> = change.replace === true ? {} : { ...user.claims }
  for (const k of change.unset ?? []) Reflect.deleteProperty(next, k)
  Object.assign(next, change.set ?? {})
  return summary(await setClaims(store, name, next, resolve(opts).now))
}

export async function sessionsList (store: Store, user: string, opts?: AdminOptions): Promise<SessionInfo[]> {
  const u = await store.findUserByName(user)
  if (u === undefined) throw new UserNotFoundError(user)
  return toSessionInfos(await store.listSessionsByUser(u.id), resolve(opts).now)
}

/**
 * `{ user }`: every session of the user and every access token issued to them so far;
 * `{ session }`: one session and its access tokens. Returns the session ids revoked.
 */
export async function sessionsRevoke (store: Store, target: { user: string } | { session: string }, opts?: AdminOptions): Promise<string[]> {
  const { now, timing } = resolve(opts)
  if ('user' in target) {
    const u = await store.findUserByName(target.user)
    if (u === undefined) throw new UserNotFoundError(target.user)
    const sids = await store.transaction(async (tx) => await revokeUserTx(tx, u.id, now, RevokeReason.admin, timing))
    opts?.events?.emit('user_revoked', { sub: u.id, user: u.name, reason: 'admin', sessions: sids.length })
    return sids
  }
  const revoked = await store.transaction(async (tx) => {
    const session = await tx.getSession(target.session)
    if (session === undefined) throw new SessionNotFoundError(target.session)
    return (await revokeSessionTx(tx, target.session, now, RevokeReason.admin, timing)) ? session.userId : undefined
  })
  if (revoked === undefined) return []
  opts?.events?.emit('session_revoked', { sid: target.session, sub: revoked, reason: 'admin' })
  return [target.session]
}

/** `portcullis migrate`: applies pending migrations and returns the versions applied */
export async function migrate (opts: Pick<OpenStoreOptions, 'url' | 'dataDir' | 'logger'>): Promise<number[]> {
  const store = await openStore({ ...opts, migrate: false })
  try {
    return await store.migrate()
  } finally {
    await store.close()
  }
}
