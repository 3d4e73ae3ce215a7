/**
 * The access token and when to replace it.
 *
 * Timing is measured on the SDK's own clock, and only as durations: the gateway says how
 * long the token lives (`expires_in`) and the SDK counts from the moment it SENT the
 * request. The token was issued after that moment, so the estimate errs early by one round
 * trip, never late; and an offset between the device clock and the gateway clock (a phone
 * minutes off) does not enter at all, which comparing `exp` with the local clock would do.
 * The JWT's own claims are only a fallback: `exp - iat` is still a duration; `exp` alone
 * against the local clock is the last resort.
 */
import type { Clock } from './platform.js'

export interface AccessToken {
  readonly value: string
  /** on the SDK clock; undefined when the lifetime is unknown (then only a 401 replaces it) */
  readonly expiresAtMs: number | undefined
  /** as issued; sizes the refresh margin */
  readonly lifetimeMs: number | undefined
}

/** the proactive margin never exceeds this share of the lifetime (a 1-minute token refreshes at 45 s, not at once) */
const MAX_MARGIN_SHARE = 0.25

export function tokenFromAnswer (value: string, expiresInSec: unknown, sentAtMs: number, nowMs: number): AccessToken {
  if (typeof expiresInSec === 'number' && Number.isFinite(expiresInSec) && expiresInSec > 0) {
    return { value, expiresAtMs: sentAtMs + expiresInSec * 1000, lifetimeMs: expiresInSec * 1000 }
  }
  const claims = decodeJwtPayload(value)
  const exp = claims?.exp
  const iat = claims?.iat
  if (typeof exp === 'number' && typeof iat === 'number' && exp > iat) {
    return { value, expiresAtMs: sentAtMs + (exp - iat) * 1000, lifetimeMs: (exp - iat) * 1000 }
  }
  if (typeof exp === 'number') {
    // skew-sensitive: only when the gateway gave no duration and the token no iat
    return { value, expiresAtMs: exp * 1000, lifetimeMs: Math.max(0, exp * 1000 - nowMs) }
  }
  return { value, expiresAtMs: undefined, lifetimeMs: undefined }
}

export function marginMs (token: AccessToken, configuredMarginMs: number): number {
  return token.lifetimeMs === undefined ? configuredMarginMs : Math.min(configuredMarginMs, token.lifetimeMs * MAX_MARGIN_SHARE)
}

/** time to replace it: within the margin of its expiry */
export function needsRefresh (token: AccessToken, now: Clock, configuredMarginMs: number): boolean {
  return token.expiresAtMs !== undefined && now() >= token.expiresAtMs - marginMs(token, configuredMarginMs)
}

/** past its estimated expiry: sending it would only earn a 401 */
export function isExpired (token: AccessToken, now: Clock): boolean {
  return token.expiresAtMs !== undefined && now() >= token.expiresAtMs
}

/** the payload of a JWT, unverified: for timing fallbacks and display, never for decisions */
export function decodeJwtPayload (jwt: string): Record<string, unknown> | undefined {
  const part = jwt.split('.')[1]
  if (part === undefined || part === '') return undefined
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/').padEnd(Math.ceil(part.length / 4) * 4, '=')
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0))
    const parsed: unknown = JSON.parse(new TextDecoder().decode(bytes))
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? parsed as Record<string, unknown> : undefined
  } catch {
    return undefined
  }
}
