/**
 * Versioned schema migrations, ordered, append-only: never edit a shipped entry, add a
 * new one. The same SQL runs on PostgreSQL and on embedded PGlite. Applied versions are
 * recorded in `schema_migrations`; the runner (sql-store.ts) holds a
 * `pg_advisory_lock` so two replicas starting at once apply each migration once.
 *
 * Column notes:
 * - times are `timestamptz` written from the service clock (never `now()`), so tests
 *   can inject time and every replica agrees on what "expired" means.
 * - token hashes are SHA-256, base64url text: the same type in pg and PGlite (bytea
 *   comes back as Buffer in one and Uint8Array in the other).
 */

export interface Migration {
  version: number
  name: string
  sql: string
}

/** pg_advisory_lock key: an arbitrary constant, "portcull" as ASCII bytes */
export const MIGRATION_LOCK_KEY = '8083546657707107436'

/** pg_advisory_xact_lock key held while a user is created: "portusrs" as ASCII bytes */
export const USER_CREATION_LOCK_KEY = '8101820099175084659'

export const MIGRATIONS: readonly Migration[] = Object.freeze([
  {
    version: 1,
    name: 'users, sessions, refresh tokens, revocations',
    sql: `
CREATE TABLE users (
  id            text PRIMARY KEY,
  name          text NOT NULL UNIQUE,
  password_hash text NOT NULL,
  scopes        text[] NOT NULL DEFAULT '{}',
  claims        jsonb NOT NULL DEFAULT '{}'::jsonb,
  disabled      boolean NOT NULL DEFAULT false,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL
);

CREATE TABLE sessions (
  id            text PRIMARY KEY,
  user_id       text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  created_at    timestamptz NOT NULL,
  last_used_at  timestamptz NOT NULL,
  expires_at    timestamptz NOT NULL,
  user_agent    text,
  ip            text,
  revoked_at    timestamptz,
  revoke_reason text
);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

-- one row per refresh token ever issued; a session's rows form its token family
CREATE TABLE refresh_tokens (
  token_hash       text PRIMARY KEY,
  session_id       text NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
  created_at       timestamptz NOT NULL,
  expires_at       timestamptz NOT NULL,
  spent_at         timestamptz,
  successor_hash   text,
  -- the successor's plaintext sealed with AES-256-GCM under HKDF(this token's plaintext):
  -- only a holder of this (spent) token can open it, during the reuse grace window
  successor_sealed text
);
CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);
CREATE INDEX refresh_tokens_expires_at_idx ON refresh_tokens (expires_at);

-- the revocation feed: replicas load live rows at start and LISTEN for new ones
CREATE TABLE revocations (
  id            bigserial PRIMARY KEY,
  kind          text NOT NULL CHECK (kind IN ('jti', 'session', 'user')),
  value         text NOT NULL,
  expires_at    timestamptz NOT NULL,
  issued_before timestamptz,
  created_at    timestamptz NOT NULL
);
CREATE INDEX revocations_expires_at_idx ON revocations (expires_at);
`,
  },
  {
    version: 2,
    name: 'login throttle in the store, credentials version, refresh state on the session row',
    sql: `
-- Login throttle shared by every replica (issue 9 item 1). One row per (kind, key): the
-- attempt is counted here, under the row lock, BEFORE the password is verified.
-- kind account: key = SHA-256 of the NFKC-lowercased name (fixed size whatever the input);
-- kind ip / ip_total: key = the client address, IPv6 aggregated per /64.
CREATE TABLE login_attempts (
  kind         text NOT NULL CHECK (kind IN ('account', 'ip', 'ip_total')),
  key          text NOT NULL CHECK (length(key) <= 64),
  window_start timestamptz NOT NULL,
  attempts     integer NOT NULL,
  locked_until timestamptz,
  lockouts     integer NOT NULL DEFAULT 0,
  -- when the row holds nothing any more (window, lock and backoff streak all over)
  forget_at    timestamptz NOT NULL,
  updated_at   timestamptz NOT NULL,
  PRIMARY KEY (kind, key)
);
CREATE INDEX login_attempts_forget_at_idx ON login_attempts (forget_at);
CREATE INDEX login_attempts_updated_at_idx ON login_attempts (updated_at);

-- Bumped (in the same transaction) whenever a user's sessions are revoked: password change,
-- disable, logout-all, admin revoke. A login re-reads it under a row lock in the transaction
-- that creates its session; a refresh compares it with the session's copy (issue 9 item 2).
ALTER TABLE users ADD COLUMN credentials_version integer NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD COLUMN credentials_version integer NOT NULL DEFAULT 0;

-- Refresh state on the session row: O(1) storage per session instead of one row per
-- rotation (issue 9 item 8). Tokens are <sid>.<secret+tag>; only hashes are stored.
-- refresh_key: per-session HMAC key; the tag proves a token was issued for this session
--   (an old spent one is recognised as reuse without keeping its hash).
-- refresh_prev_*: the token rotated last, for the reuse grace window; the sealed successor
--   is dropped once refresh_prev_sealed_until has passed.
-- Legacy sessions (made before this migration) have refresh_key NULL and keep their
-- refresh_tokens rows until their first rotation moves them here.
ALTER TABLE sessions ADD COLUMN refresh_key text;
ALTER TABLE sessions ADD COLUMN refresh_hash text;
ALTER TABLE sessions ADD COLUMN refresh_issued_at timestamptz;
ALTER TABLE sessions ADD COLUMN refresh_expires_at timestamptz;
ALTER TABLE sessions ADD COLUMN refresh_prev_hash text;
ALTER TABLE sessions ADD COLUMN refresh_prev_issued_at timestamptz;
ALTER TABLE sessions ADD COLUMN refresh_prev_sealed text;
ALTER TABLE sessions ADD COLUMN refresh_prev_sealed_until timestamptz;
CREATE INDEX sessions_prev_sealed_until_idx ON sessions (refresh_prev_sealed_until)
  WHERE refresh_prev_sealed_until IS NOT NULL;
`,
  },
  {
    version: 3,
    name: 'user name keys',
    sql: `
-- The key under which names are "the same" (user-name-key.ts: SHA-256 of the NFKC-lowercased
-- name, the login throttle's account key). A new user whose key is taken is refused; the check
-- and the insert run under USER_CREATION_LOCK_KEY (sql-store.ts createUser). Not UNIQUE: names
-- created before the check existed may already collide. NULL for rows written before this
-- migration (or by an older replica); createUser fills them in before it checks.
ALTER TABLE users ADD COLUMN name_key text;
CREATE INDEX users_name_key_idx ON users (name_key);
CREATE INDEX users_name_key_missing_idx ON users (id) WHERE name_key IS NULL;
`,
  },
  {
    version: 4,
    name: 'a quota on revocations of identity providers\' tokens',
    sql: `
-- Counters of logouts that revoke an identity provider's token (foreign-revocations.ts): per
-- issuer and per issuer and subject, in the login throttle's table and state machine.
ALTER TABLE login_attempts DROP CONSTRAINT login_attempts_kind_check;
ALTER TABLE login_attempts ADD CONSTRAINT login_attempts_kind_check
  CHECK (kind IN ('account', 'ip', 'ip_total', 'foreign_revocation'));
`,
  },
])
