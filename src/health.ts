/**
 * Readiness as components see it. Each component reports one check; /readyz answers
 * 503 only when a check is `down` (the gateway must not get traffic), 200 with status
 * `degraded` when it serves but something is wrong (the revocation feed reconnecting, an
 * identity provider unreachable: a load balancer must not drain the whole fleet for that —
 * issue 9, item 4), and 200 `ready` otherwise. The body says why, per check.
 */
export interface HealthCheck {
  name: string
  state: 'ok' | 'degraded' | 'down'
  /** why, when not ok */
  reason?: string | undefined
  /** figures for operators (staleness, keys, workers…) */
  detail?: Record<string, unknown> | undefined
}

export interface HealthReport {
  status: 'ready' | 'degraded' | 'not_ready'
  reasons: string[]
  checks: HealthCheck[]
}

export function healthReport (checks: readonly HealthCheck[]): HealthReport {
  const reasons = checks.filter(c => c.state !== 'ok').map(c => `${c.name}: ${c.reason ?? c.state}`)
  const status = checks.some(c => c.state === 'down') ? 'not_ready' : checks.some(c => c.state === 'degraded') ? 'degraded' : 'ready'
  return { status, reasons, checks: [...checks] }
}

/**
 * What readiness reports from the moment a drain begins (SIGTERM/SIGINT), before any listener
 * closes: a load balancer that polls /readyz takes the gateway out while in-flight requests
 * finish, instead of sending traffic to a port that refuses it (fix-workers-drain-still-ready).
 */
export const DRAINING_CHECK: HealthCheck = Object.freeze({ name: 'shutdown', state: 'down', reason: 'draining' })

/** whether these checks (one process's, a worker's answer to the primary) say it is draining */
export function isDraining (checks: readonly HealthCheck[]): boolean {
  return checks.some(c => c.name === DRAINING_CHECK.name && c.state === 'down')
}
