/**
 * Security events (DESIGN.md "Operations"; issue 9 item 7): one structured log line per
 * event, of its own, so an operator can alert on them without parsing decision lines:
 *
 *   {"level":40,"time":…,"pid":…,"event":"refresh_token_reuse","sid":"…","sub":"…","ip":"…","msg":"security_event"}
 *
 * and a per-event hook for metrics (`onEvent`, e.g. a prom-client counter labelled by
 * `event` and `label`).
 *
 * NEVER a secret: no token (access or refresh), no password, no hash of either, no cookie
 * or Authorization value. Identifiers are fine: user name, `sub`, `sid`, `jti`, client
 * address. The fields of each event are typed below; on top of that every line passes
 * through a deny-list of field names (a belt for the braces: a field that looks like a
 * secret is dropped, and `redacted` says which).
 *
 * Extensible: other modules add their event types by augmenting SecurityEventFields
 *   declare module '…/security-events.js' { interface SecurityEventFields { config_reloaded: { source: string } } }
 * and, optionally, a level in SECURITY_EVENT_LEVELS (default `info`).
 */

/** the fields of each event type; augment this interface to add an event */
export interface SecurityEventFields {
  /** a login refused for its credentials; `reason` is for operators only (the client got one generic 401) */
  login_failed: { user: string, ip?: string | undefined, reason: 'unknown_user' | 'bad_password' | 'user_disabled' | 'credentials_changed' }
  /** a login refused by the throttle before any password work; `limit` names the counter */
  login_throttled: { user: string, ip?: string | undefined, limit: 'account' | 'ip' | 'ip_total', retryAfterSec: number }
  login_succeeded: { user: string, sub: string, sid: string, ip?: string | undefined }
  /** a logout with an identity provider's token refused by its quota (foreign-revocations.ts): nothing was revoked */
  revocation_throttled: { issuer: string, sub?: string | undefined, retryAfterSec: number }
  /** a spent refresh token presented after the grace window: the whole family is revoked */
  refresh_token_reuse: { sid: string, sub: string, ip?: string | undefined }
  session_revoked: { sid: string, sub?: string | undefined, reason: RevocationEventReason }
  /** every session and every access token of a user up to now */
  user_revoked: { sub: string, user?: string | undefined, reason: RevocationEventReason, sessions: number }
  jti_revoked: { jti: string, sub?: string | undefined, reason: RevocationEventReason }
  /** an operator's action through the admin API or the CLI */
  admin_action: { action: string, via: 'api' | 'cli', target?: string | undefined, ip?: string | undefined, outcome: 'ok' | 'error', code?: string | undefined }
  /** a new configuration is in force (SIGHUP, portcullis reload, POST /admin/reload) */
  config_reloaded: { configHash: string, routes: number }
  /** a reload was refused whole: the configuration in force stays; `paths` names each problem */
  config_reload_failed: { configHash: string, problems: number, paths: string }
}

export type RevocationEventReason = 'logout' | 'logout_all' | 'admin' | 'password_changed' | 'user_disabled' | 'reuse'

export type SecurityEventType = keyof SecurityEventFields & string

/** the pino-compatible subset used here */
export interface SecurityEventLogger {
  info: (obj: object, msg?: string) => void
  warn: (obj: object, msg?: string) => void
}

export type SecurityEventLevel = 'info' | 'warn'

/** level per event; unlisted events (added by augmentation) log at info */
export const SECURITY_EVENT_LEVELS: Record<string, SecurityEventLevel> = {
  login_failed: 'info',
  login_throttled: 'warn',
  login_succeeded: 'info',
  revocation_throttled: 'warn',
  refresh_token_reuse: 'warn',
  session_revoked: 'info',
  user_revoked: 'info',
  jti_revoked: 'info',
  admin_action: 'info',
  config_reloaded: 'info',
  config_reload_failed: 'warn',
}

/**
 * The one low-cardinality field per event that a metric may use as a label (the rest —
 * user, sub, sid, address — would explode a time series database).
 */
const LABEL_FIELD: Record<string, string> = {
  login_failed: 'reason',
  login_throttled: 'limit',
  session_revoked: 'reason',
  user_revoked: 'reason',
  jti_revoked: 'reason',
  admin_action: 'action',
}

/** a refused reload's event: how many problems and their paths, never a value of the file */
export function reloadFailedEvent (configHash: string, problems: ReadonlyArray<{ path: string }>): SecurityEventFields['config_reload_failed'] {
  return { configHash, problems: problems.length, paths: problems.map(p => p.path === '' ? '/' : p.path).join(' ') }
}

/** the message of every security event line */
export const SECURITY_EVENT_MSG = 'security_event'

/** field names that are never logged, whatever a caller passes (compared lower-cased, without _ and -) */
const FORBIDDEN_FIELDS = new Set([
  'password', 'passwd', 'secret', 'token', 'accesstoken', 'refreshtoken', 'idtoken', 'authorization', 'cookie', 'setcookie',
  'hash', 'passwordhash', 'tokenhash', 'refreshhash', 'successor', 'sealed', 'key', 'privatekey', 'credentials',
])

/** free-text values a client controls (a user name) are capped: a log line has a bounded size */
export const MAX_FIELD_CHARS = 256

export type SecurityEventHook = (event: string, label: string) => void

export interface SecurityEventsOptions {
  logger: SecurityEventLogger
  /** called once per event, after the line is written; `label` is '' for events without one */
  onEvent?: SecurityEventHook | undefined
}

function clean (fields: object): { safe: Record<string, unknown>, redacted: string[] } {
  const safe: Record<string, unknown> = {}
  const redacted: string[] = []
  for (const [k, v] of Object.entries(fields)) {
    if (v === undefined) continue
    if (FORBIDDEN_FIELDS.has(k.toLowerCase().replace(/[-_]/g, ''))) {
      redacted.push(k)
      continue
    }
    safe[k] = typeof v === 'string' && v.length > MAX_FIELD_CHARS ? v.slice(0, MAX_FIELD_CHARS) + '…' : v
  }
  return { safe, redacted }
}

export class SecurityEvents {
  readonly #log: SecurityEventLogger
  readonly #onEvent: SecurityEventHook | undefined

  constructor (opts: SecurityEventsOptions) {
    this.#log = opts.logger
    this.#onEvent = opts.onEvent
  }

  emit<E extends SecurityEventType> (event: E, fields: SecurityEventFields[E]): void {
    const { safe, redacted } = clean(fields)
    const line: Record<string, unknown> = { event, ...safe }
    if (redacted.length > 0) line.redacted = redacted
    const level = SECURITY_EVENT_LEVELS[event] ?? 'info'
    try {
      this.#log[level](line, SECURITY_EVENT_MSG)
    } catch {
      // a broken log sink must not fail a login or a revocation
    }
    if (this.#onEvent !== undefined) {
      const labelField = LABEL_FIELD[event]
      const label = labelField === undefined ? '' : String(safe[labelField] ?? '')
      try {
        this.#onEvent(event, label)
      } catch {
        // nor a broken metric
      }
    }
  }
}

/** a sink that drops everything (the default where no logger is wired) */
export const NO_SECURITY_EVENTS = new SecurityEvents({ logger: { info: () => {}, warn: () => {} } })
