import type { Http2Session } from 'node:http2'
import type { Logger } from 'pino'
import type { Gateway } from './app.js'
import { DRAINING_CHECK } from './health.js'

// Node's default accept backlog (511) overflows when a load balancer opens a thousand
// connections at once; the dropped SYNs come back after 1 s and 3 s as latency (bench: 1,000
// connections). The kernel caps it at net.core.somaxconn (4096 on current Linux).
const LISTEN_BACKLOG = 4096

export interface Listening {
  port: number
  adminPort: number
  /** stop accepting, let in-flight requests finish (bounded by server.shutdownTimeout), close everything */
  shutdown: (signal?: string) => Promise<void>
}

/**
 * SIGHUP — reload — from the first moment of `portcullis start` (fix-sighup-during-startup).
 * Node's default for SIGHUP ends the process, and a gateway takes 1–5 s to start (loading its
 * modules alone ~0.8 s, then the store, the revocation feed, the listeners): a reload sent in
 * that time — by an operator, a deployment tool that edits the file, or to a whole process
 * group — killed it with status 129 and nothing logged. From `holdReloadSignal()` on, a SIGHUP
 * never stops the process. Until the gateway listens it is only remembered (the file may have
 * changed while the gateway was reading it); `route()` then runs one reload for all that came,
 * and logs why, and every later SIGHUP reloads. A cluster worker never routes it: the primary
 * reloads the fleet (src/workers.ts).
 *
 * This module imports nothing at run time but src/health.ts (which imports nothing), so the CLI
 * can hold the signal before it loads the rest.
 */
export interface ReloadSignal {
  /** from now on each SIGHUP calls `reload`; one that came before runs it once now */
  route: (reload: () => Promise<unknown>, logger: Logger) => void
}

export function holdReloadSignal (): ReloadSignal {
  let missed = false
  let reload: (() => Promise<unknown>) | undefined
  process.on('SIGHUP', () => {
    if (reload === undefined) missed = true
    // the outcome is logged by the reload itself
    else reload().catch(() => {})
  })
  return {
    route: (to, logger) => {
      reload = to
      if (!missed) return
      missed = false
      logger.info({ signal: 'SIGHUP' }, 'a SIGHUP arrived while the gateway was starting: loading the configuration again now that it listens')
      to().catch(() => {})
    },
  }
}

/** Starts both listeners; SIGTERM/SIGINT drain and exit 0. `server.ts` listens, `app.ts` builds. */
export interface ListenOptions {
  /** SIGTERM/SIGINT drain and exit, SIGHUP reloads (default true) */
  handleSignals?: boolean
  /** the SIGHUP the CLI held while starting (default: held from here on) */
  reloadSignal?: ReloadSignal
  /** start the admin listener (default true; a worker leaves it to the primary, src/workers.ts) */
  admin?: boolean
}

export async function listen (gateway: Gateway, options: ListenOptions = {}): Promise<Listening> {
  const { config, app, admin, logger } = gateway
  try {
    await app.listen({ host: config.server.host, port: config.server.port, backlog: LISTEN_BACKLOG })
    if (options.admin !== false) await admin.listen({ host: config.admin.host, port: config.admin.port })
  } catch (err) {
    // fail closed: a listener that cannot bind (a port taken) stops the whole start — the
    // public listener must not serve without the admin one (no /readyz for the orchestrator),
    // and nothing left open (store, feed, timers) may keep a half-started process alive
    await gateway.close().catch(() => {})
    throw err
  }
  const port = (app.server.address() as { port: number }).port
  const adminPort = options.admin === false ? 0 : (admin.server.address() as { port: number }).port
  logger.info({ port, adminPort, routes: config.routes.length, tls: config.server.tls !== undefined, http2: config.server.http2, hash: config.hash }, 'portcullis listening')

  // HTTP/2 sessions outlive their requests (a browser keeps one open): on shutdown each gets a
  // GOAWAY (in-flight streams finish, new ones go elsewhere), and is destroyed at the timeout
  const sessions = new Set<Http2Session>()
  app.server.on('session', (session: Http2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  })

  let closing: Promise<void> | undefined
  const shutdown = (signal = 'shutdown'): Promise<void> => {
    closing ??= (async () => {
      // not ready first, before any listener closes: /readyz (and portcullis_ready) say 503
      // for the whole drain; a worker reports it to the primary, which counts it out
      gateway.readiness.push(() => DRAINING_CHECK)
      logger.info({ signal }, 'draining: no new connections, waiting for in-flight requests')
      for (const session of sessions) session.close()
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<'timeout'>(resolve => { timer = setTimeout(() => resolve('timeout'), config.server.shutdownTimeoutMs) })
      const outcome = await Promise.race([gateway.close().then(() => 'closed' as const), timeout])
      clearTimeout(timer)
      if (outcome === 'timeout') {
        logger.warn({ timeoutMs: config.server.shutdownTimeoutMs }, 'in-flight requests did not finish in time; closing their connections')
        for (const server of [app.server, admin.server]) {
          // an HTTP/2 server has no closeAllConnections: its sessions are destroyed instead
          if (typeof server.closeAllConnections === 'function') server.closeAllConnections()
        }
        for (const session of sessions) session.destroy()
      }
      logger.info('stopped')
      logger.flush()
    })()
    return closing
  }
  if (options.handleSignals !== false) {
    for (const signal of ['SIGTERM', 'SIGINT'] as const) {
      process.once(signal, () => { shutdown(signal).then(() => process.exit(0), () => process.exit(1)) })
    }
    // SIGHUP: load gateway.yaml again (in a worker the primary asks for reloads, so every
    // worker switches together)
    if (options.admin !== false) (options.reloadSignal ?? holdReloadSignal()).route(async () => await gateway.reload(), logger)
  }
  return { port, adminPort, shutdown }
}
