/**
 * User management: validation of names, scopes and claims, then the store. Used by the
 * CLI (admin-commands.ts) and the admin API. Changing a password or disabling a user
 * also revokes the user's sessions and access tokens.
 */
import { SCOPE_TOKEN } from '../tokens/scopes.js'
import { unfitForHeader } from '../tokens/identity.js'
import { isExactNumber, isWellFormed } from '../text.js'
import { randomUUID } from 'node:crypto'
import { InvalidUserInputError, UserNotFoundError } from './errors.js'
import { hashPassword } from './passwords.js'
import type { SecurityEvents } from '../security-events.js'
import { eventReason, revokeUserTx, RevokeReason } from './revoke.js'
import type { RevocationTiming, RevokeReasonName } from './revoke.js'
import type { Store, StoreQueries, UserPatch, UserRecord } from './store.js'

const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}$/
/** RFC 6749 §3.3 scope-token: printable ASCII except space, `"` and `\` */
export const MAX_SCOPES = 200
export const MAX_CLAIMS_BYTES = 4096

/**
 * Claims the token service sets itself; a user's extra claims may not override them.
 * `preferred_username` (OIDC Core §5.1) carries the user name.
 */
export const RESERVED_CLAIMS: ReadonlySet<string> = new Set([
  'iss', 'sub', 'aud', 'exp', 'nbf', 'iat', 'jti', 'scope', 'sid', 'typ', 'cnf', 'client_id', 'preferred_username',
])

export function validateUserName (name: unknown): string {
  if (typeof name !== 'string' || !NAME_PATTERN.test(name)) {
    throw new InvalidUserInputError('name', 'must be 1..128 characters of A-Z a-z 0-9 . _ @ + - starting with a letter or digit')
  }
  return name
}

export function validateScopes (scopes: unknown): string[] {
  if (!Array.isArray(scopes)) throw new InvalidUserInputError('scopes', 'must be a list of strings')
  if (scopes.length > MAX_SCOPES) throw new InvalidUserInputError('scopes', `at most ${MAX_SCOPES} scopes`)
  scopes.forEach((s, i) => {
    if (typeof s !== 'string' || !SCOPE_TOKEN.test(s)) {
      throw new InvalidUserInputError(`scopes/${i}`, 'must be a non-empty scope token (RFC 6749 §3.3: no spaces, quotes or backslashes)')
    }
  })
  return [...new Set(scopes as string[])]
}

function checkClaimValue (path: string, v: unknown, top = false): void {
  // what the gateway would refuse in every token of the user (tokens/identity.ts
  // forwardedClaimsCheck, text.ts isWellFormed / isExactNumber) is refused here
  if (typeof v === 'string') {
    if (!isWellFormed(v)) throw new InvalidUserInputError(path, 'must be well-formed Unicode (no lone surrogate)')
    // CR, LF or NUL would make the identity header unsafe; the gateway refuses such tokens
    if (/[\r\n\0]/.test(v)) throw new InvalidUserInputError(path, 'must not contain CR, LF or NUL')
    // a claim's own text becomes an identity header value as it is (nested ones travel as
    // JSON): one the gateway would refuse in every token must be refused here, not at each request
    if (top && unfitForHeader(v)) throw new InvalidUserInputError(path, 'must not start or end with a space or tab, or contain control characters (it may become an identity header)')
  } else if (Array.isArray(v)) {
    v.forEach((x, i) => checkClaimValue(`${path}/${i}`, x))
  } else if (v !== null && typeof v === 'object') {
    for (const [k, x] of Object.entries(v)) {
      if (!isWellFormed(k)) throw new InvalidUserInputError(path, 'must have well-formed Unicode member names')
      checkClaimValue(`${path}/${k}`, x)
    }
  } else if (!(v === null || typeof v === 'number' || typeof v === 'boolean')) {
    throw new InvalidUserInputError(path, 'must be JSON')
  } else if (typeof v === 'number' && !isExactNumber(v)) {
    throw new InvalidUserInputError(path, 'must be a finite number, an integer within ±(2^53 − 1) (send a larger identifier as a string)')
  }
}

export function validateClaims (claims: unknown): Record<string, unknown> {
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) {
    throw new InvalidUserInputError('claims', 'must be an object')
  }
  for (const [k, v] of Object.entries(claims)) {
    if (!isWellFormed(k)) throw new InvalidUserInputError('claims', 'must have well-formed Unicode names')
    if (RESERVED_CLAIMS.has(k)) throw new InvalidUserInputError(`claims/${k}`, 'is reserved and set by the gateway')
    checkClaimValue(`claims/${k}`, v, true)
  }
  if (Buffer.byteLength(JSON.stringify(claims)) > MAX_CLAIMS_BYTES) {
    throw new InvalidUserInputError('claims', `must serialise to at most ${MAX_CLAIMS_BYTES} bytes (they go into every token)`)
  }
  return claims as Record<string, unknown>
}

export interface AddUserInput {
  name: string
  password: string
  scopes?: string[]
  claims?: Record<string, unknown>
  disabled?: boolean
}

export async function addUser (store: Store, input: AddUserInput, nowMs: number): Promise<UserRecord> {
  const name = validateUserName(input.name)
  const scopes = validateScopes(input.scopes ?? [])
  const claims = validateClaims(input.claims ?? {})
  const passwordHash = await hashPassword(input.password)
  return await store.createUser({ id: randomUUID(), name, passwordHash, scopes, claims, disabled: input.disabled ?? false }, new Date(nowMs))
}

async function mustUpdate (q: Pick<StoreQueries, 'updateUser'>, name: string, patch: UserPatch, nowMs: number): Promise<UserRecord> {
  const user = await q.updateUser(name, patch, new Date(nowMs))
  if (user === undefined) throw new UserNotFoundError(name)
  return user
}

export async function setScopes (store: Store, name: string, scopes: string[], nowMs: number): Promise<UserRecord> {
  return await mustUpdate(store, name, { scopes: validateScopes(scopes) }, nowMs)
}

export async function setClaims (store: Store, name: string, claims: Record<string, unknown>, nowMs: number): Promise<UserRecord> {
  return await mustUpdate(store, name, { claims: validateClaims(claims) }, nowMs)
}

export interface RevokingChangeOptions {
  /** security events: user_revoked with the reason */
  events?: SecurityEvents | undefined
}

/**
 * The change and the revocation of every session in ONE transaction, the user row updated
 * first: a login that read the user before commits its session before this (and is
 * revoked here) or sees the bumped credentials version after (and is refused).
 */
async function changeAndRevoke (store: Store, name: string, patch: UserPatch, nowMs: number, timing: RevocationTiming,
  reason: RevokeReasonName, events: SecurityEvents | undefined): Promise<UserRecord> {
  const { user, sids } = await store.transaction(async (tx) => {
    const updated = await mustUpdate(tx, name, patch, nowMs)
    const sids = await revokeUserTx(tx, updated.id, nowMs, reason, timing)
    return { user: (await tx.findUserById(updated.id)) ?? updated, sids }
  })
  events?.emit('user_revoked', { sub: user.id, user: user.name, reason: eventReason(reason), sessions: sids.length })
  return user
}

/** sets a new password and, by default, logs the user out everywhere */
export async function setPassword (store: Store, name: string, password: string, nowMs: number,
  timing: RevocationTiming, opts: { revokeSessions?: boolean } & RevokingChangeOptions = {}): Promise<UserRecord> {
  const passwordHash = await hashPassword(password)
  if (!(opts.revokeSessions ?? true)) return await mustUpdate(store, name, { passwordHash }, nowMs)
  return await changeAndRevoke(store, name, { passwordHash }, nowMs, timing, RevokeReason.passwordChanged, opts.events)
}

/** disabling also revokes every session and access token of the user */
export async function setDisabled (store: Store, name: string, disabled: boolean, nowMs: number, timing: RevocationTiming,
  opts: RevokingChangeOptions = {}): Promise<UserRecord> {
  if (!disabled) return await mustUpdate(store, name, { disabled }, nowMs)
  return await changeAndRevoke(store, name, { disabled }, nowMs, timing, RevokeReason.userDisabled, opts.events)
}
