/**
 * What the session flows (login.ts, rotation.ts, service.ts) share: the store, the clock,
 * the options, the throttle and the security events. Built once by SessionService.
 */
import type { SecurityEvents } from '../security-events.js'
import type { RevocationTiming } from './revoke.js'
import type { Store } from './store.js'
import type { LoginThrottle } from './throttle.js'

export interface SessionServiceOptions {
  /** lifetime of one refresh token; capped by the session's absolute expiry */
  refreshTokenTtlSec: number
  /** absolute session lifetime from login: refresh never extends it */
  sessionMaxAgeSec: number
  /** how long a spent refresh token still returns its successor (concurrent tabs) */
  reuseGraceSec: number
  /** access token lifetime, used to size revocation entries */
  accessTokenTtlSec: number
  /** the verifier's clock tolerance: revocation entries outlive `exp` by this much */
  clockSkewSec: number
}

export interface ServiceContext {
  store: Store
  clock: () => number
  options: Readonly<SessionServiceOptions>
  timing: RevocationTiming
  throttle: LoginThrottle | undefined
  events: SecurityEvents
  /** a refresh token's expiry: its TTL from now, capped by the session's absolute end */
  refreshExpiry: (nowMs: number, sessionExpiresAt: Date) => Date
}

export const MAX_USER_AGENT_CHARS = 512
export const MAX_IP_CHARS = 64

export function clip (v: string | undefined, max: number): string | null {
  return v === undefined || v === '' ? null : v.slice(0, max)
}
