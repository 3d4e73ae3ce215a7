import type { ConfigProblem } from './errors.js'
import type { GatewayConfig } from './config/types.js'

/**
 * What a reload may change without a restart: routes, policies, scopes, keys and the token
 * issuer settings, identity providers, identity mappings and assertions, CORS, the route
 * timeouts and limits, the write timeout, the TLS certificate. Everything else is fixed for
 * the life of the process — listeners, database, admin API, logging, telemetry, login and
 * revocation settings, and the session lifetimes and refresh transport the auth endpoints
 * were built with — and a file that changes one of them is refused whole, naming each.
 */
const RESTART_ONLY: ReadonlyArray<readonly [path: string, read: (c: GatewayConfig) => unknown]> = [
  ['/server/host', c => c.server.host],
  ['/server/port', c => c.server.port],
  ['/server/trustProxy', c => c.server.trustProxy],
  ['/server/realm', c => c.server.realm],
  ['/server/requestTimeout', c => c.server.requestTimeoutMs],
  ['/server/keepAliveTimeout', c => c.server.keepAliveTimeoutMs],
  ['/server/shutdownTimeout', c => c.server.shutdownTimeoutMs],
  ['/server/bodyLimitBytes', c => c.server.bodyLimitBytes],
  ['/server/workers', c => c.server.workers],
  ['/server/http2', c => c.server.http2],
  ['/server/tls', c => c.server.tls === undefined],
  ['/admin', c => c.admin],
  ['/database', c => c.database],
  ['/logging', c => c.logging],
  ['/telemetry', c => c.telemetry],
  ['/login', c => c.login],
  ['/revocation', c => c.revocation],
  ['/tokens/refreshTokenTtl', c => c.tokens.refreshTokenTtlSec],
  ['/tokens/sessionMaxAge', c => c.tokens.sessionMaxAgeSec],
  ['/tokens/clockSkew', c => c.tokens.clockSkewSec],
  ['/tokens/refresh', c => c.tokens.refresh],
  ['/tokens/allowedOrigins', c => c.tokens.allowedOrigins],
]

export function reloadProblems (current: GatewayConfig, next: GatewayConfig): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  for (const [path, read] of RESTART_ONLY) {
    if (JSON.stringify(read(current)) !== JSON.stringify(read(next))) {
      problems.push({ path, message: 'changes only with a restart; the running gateway keeps its current configuration' })
    }
  }
  return problems
}
