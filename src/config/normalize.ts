import type { ConfigProblem } from '../errors.js'
import { usableCores } from './cpus.js'
import { SELF_ISSUER, type GatewayConfig } from './types.js'
import type { CheckContext, Raw } from './checks/context.js'
import { checkTokens } from './checks/tokens.js'
import { checkRoutes } from './checks/routes.js'
import { checkIdentity } from './checks/identity.js'
import { checkIssuers } from './checks/issuers.js'
import { checkAdmin, checkCors, checkDatabase, checkLogin, checkRevocation, checkServer, checkTelemetry } from './checks/server.js'

export interface NormalizeContext {
  baseDir: string
  source: string
  hash: string
  /** for `workers: auto`; default: the cores this process may use (its CPU quota in a container) */
  cores?: number
}

/**
 * Turns the schema-validated tree into the GatewayConfig, running every semantic check.
 * Each section's check is guarded: when the schema already failed, a section of the wrong
 * shape makes only its own check give up (its partial problems are dropped, the schema's
 * stand), so one start still lists every problem of the file. Returns undefined when any
 * problem was found.
 */
export function normalize (raw: Raw, nc: NormalizeContext, problems: ConfigProblem[]): GatewayConfig | undefined {
  const ctx: CheckContext = { baseDir: nc.baseDir, source: nc.source, problems, cores: nc.cores ?? usableCores() }
  let broken = false
  // a section that throws keeps the problems it found before (its guarded parts did their job)
  function section<T> (fn: () => T): T | undefined {
    try {
      return fn()
    } catch {
      broken = true
      return undefined
    }
  }
  const tokens = section(() => checkTokens(raw.tokens, ctx))
  const database = section(() => checkDatabase(raw.database, ctx))
  const server = section(() => checkServer(raw.server, raw.database?.url ?? '', ctx))
  const admin = section(() => checkAdmin(raw.admin, ctx))
  const issuers = section(() => checkIssuers(raw.issuers ?? [], raw.tokens?.issuer, ctx))
  const identity = section(() => checkIdentity(raw.identity, raw.tokens?.algorithm, ctx))
  const cors = section(() => checkCors(raw.cors, ctx))
  const telemetry = section(() => checkTelemetry(raw.telemetry, ctx))
  const login = section(() => checkLogin(raw.login, ctx))
  const revocation = section(() => checkRevocation(raw.revocation, ctx))
  const routes = section(() => checkRoutes(raw.routes, {
    issuers: [SELF_ISSUER, ...((raw.issuers ?? []) as Raw[]).map(i => String(i.name))],
    assertion: raw.identity?.assertion !== undefined,
    cors: raw.cors !== undefined,
    requestBufferBytes: Number(raw.server?.requestBufferBytes ?? Infinity),
  }, ctx))
  if (broken || problems.length > 0 || tokens === undefined || database === undefined || server === undefined || admin === undefined ||
    issuers === undefined || identity === undefined || telemetry === undefined || login === undefined || revocation === undefined || routes === undefined) {
    return undefined
  }
  return {
    source: nc.source,
    hash: nc.hash,
    server,
    admin,
    database,
    tokens,
    issuers,
    identity,
    login,
    revocation,
    cors,
    telemetry,
    logging: { ...raw.logging },
    routes,
  }
}
