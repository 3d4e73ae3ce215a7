/**
 * Column lists and row mappers of the SQL store (sql-store.ts): how a row of `users`,
 * `sessions`, `refresh_tokens` and `login_attempts` becomes a record. Column aliases are
 * prefixed per table (u_, s_, sr_, rt_) so one joined row maps to several records.
 */
import type { Row } from './sql-store.js'
import type { RefreshTokenRecord, SessionRecord, SessionRefreshState, ThrottleKind, ThrottleRow, UserRecord } from './store.js'

export const USER_COLUMNS = 'u.id AS u_id, u.name AS u_name, u.password_hash AS u_password_hash, u.scopes AS u_scopes, ' +
  'u.claims AS u_claims, u.disabled AS u_disabled, u.credentials_version AS u_credentials_version, ' +
  'u.created_at AS u_created_at, u.updated_at AS u_updated_at'
export const SESSION_COLUMNS = 's.id AS s_id, s.user_id AS s_user_id, s.created_at AS s_created_at, s.last_used_at AS s_last_used_at, ' +
  's.expires_at AS s_expires_at, s.user_agent AS s_user_agent, s.ip AS s_ip, s.revoked_at AS s_revoked_at, s.revoke_reason AS s_revoke_reason'
export const REFRESH_COLUMNS = 's.credentials_version AS sr_credentials_version, s.refresh_key AS sr_key, s.refresh_hash AS sr_hash, ' +
  's.refresh_issued_at AS sr_issued_at, s.refresh_expires_at AS sr_expires_at, s.refresh_prev_hash AS sr_prev_hash, ' +
  's.refresh_prev_issued_at AS sr_prev_issued_at, s.refresh_prev_sealed AS sr_prev_sealed, s.refresh_prev_sealed_until AS sr_prev_sealed_until'
export const THROTTLE_COLUMNS = 'kind, key, window_start, attempts, locked_until, lockouts, forget_at'
export const TOKEN_COLUMNS = 'rt.token_hash AS rt_token_hash, rt.session_id AS rt_session_id, rt.created_at AS rt_created_at, ' +
  'rt.expires_at AS rt_expires_at, rt.spent_at AS rt_spent_at, rt.successor_hash AS rt_successor_hash, rt.successor_sealed AS rt_successor_sealed'

export function toUser (r: Row): UserRecord {
  return {
    id: r.u_id as string,
    name: r.u_name as string,
    passwordHash: r.u_password_hash as string,
    scopes: r.u_scopes as string[],
    claims: r.u_claims as Record<string, unknown>,
    disabled: r.u_disabled as boolean,
    credentialsVersion: r.u_credentials_version as number,
    createdAt: r.u_created_at as Date,
    updatedAt: r.u_updated_at as Date,
  }
}

export function toSession (r: Row): SessionRecord {
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

export function toRefresh (r: Row): SessionRefreshState {
  return {
    credentialsVersion: r.sr_credentials_version as number,
    key: r.sr_key as string | null,
    hash: r.sr_hash as string | null,
    issuedAt: r.sr_issued_at as Date | null,
    expiresAt: r.sr_expires_at as Date | null,
    prevHash: r.sr_prev_hash as string | null,
    prevIssuedAt: r.sr_prev_issued_at as Date | null,
    prevSealed: r.sr_prev_sealed as string | null,
    prevSealedUntil: r.sr_prev_sealed_until as Date | null,
  }
}

export function toThrottle (r: Row): ThrottleRow {
  return {
    kind: r.kind as ThrottleKind,
    key: r.key as string,
    windowStart: r.window_start as Date,
    attempts: r.attempts as number,
    lockedUntil: r.locked_until as Date | null,
    lockouts: r.lockouts as number,
    forgetAt: r.forget_at as Date,
  }
}

export function toToken (r: Row): RefreshTokenRecord {
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
