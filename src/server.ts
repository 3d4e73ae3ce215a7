import cluster from 'node:cluster'
import type { Http2Session } from 'node:http2'
import type { Socket } from 'node:net'
import { constants } from 'node:os'
import type { Logger } from 'pino'
import type { Gateway } from './app.js'
import { DRAINING_CHECK } from './health.js'
import type { ToWorker } from './workers.js'

// Node's default accept backlog (511) overflows when a load balancer opens a thousand
// connections at once; the dropped SYNs come back after 1 s and 3 s as latency (bench: 1,000
// connections). The kernel caps it at net.core.somaxconn (4096 on current Linux).
const LISTEN_BACKLOG = 4096

/** the signals that drain the gateway and end it (a primary: its workers too, src/workers.ts) */
export const STOP_SIGNALS = ['SIGTERM', 'SIGINT'] as const

/**
 * How long, once the connections still open at server.shutdownTimeout are destroyed, the
 * process waits for them to close before it exits. Their requests' decision lines (499) and
 * metrics are written when the sockets report 'close', a turn or more after the destroy; the
 * process logged "stopped" and exited in the same turn, and they were lost
 * (fix-shutdown-cut-requests-unlogged). Closing takes milliseconds: the bound is for a socket
 * that never reports.
 */
const CUT_CONNECTIONS_CLOSE_WAIT_MS = 500

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
 * reloads the fleet (src/workers.ts). A cluster worker also leaves SIGTERM and SIGINT to its
 * primary from that moment (`holdWorkerStop`).
 *
 * This module imports nothing at run time but src/health.ts (which imports nothing) and
 * node:cluster, so the CLI can hold the signal before it loads the rest.
 */
export interface ReloadSignal {
  /** from now on each SIGHUP calls `reload`; one that came before runs it once now */
  route: (reload: () => Promise<unknown>, logger: Logger) => void
}

export function holdReloadSignal (): ReloadSignal {
  holdWorkerStop()
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

/**
 * A cluster worker drains when its primary tells it (a `drain` message, src/workers.ts), never
 * on a SIGTERM or SIGINT of its own (fix-second-signal-kills-drain). A signal sent to the whole
 * process group — systemd's KillMode=control-group, Ctrl-C in a terminal, `kill -- -PGID` —
 * reaches every worker as well as the primary: each worker began its own drain, then got the
 * primary's SIGTERM on top, a second signal with Node's default action, and died with every
 * request in flight (the primary logged "stopped" and exited 0 ~0.1 s later). So a worker
 * ignores both signals from the first moment of `portcullis start` (a group signal can come
 * while it loads), and a `drain` that comes before it listens ends it at once: nothing is in
 * flight yet. Without its primary (the IPC channel closed) node:cluster ends a worker itself.
 */
const workerStop: { held: boolean, drain?: (signal: string) => void, logger?: Logger, noted: boolean } = { held: false, noted: false }

function holdWorkerStop (): void {
  if (!cluster.isWorker || workerStop.held) return
  workerStop.held = true
  for (const signal of STOP_SIGNALS) {
    process.on(signal, () => {
      // logged once: a group signal repeated every second would fill the log
      if (workerStop.noted || workerStop.logger === undefined) return
      workerStop.noted = true
      workerStop.logger.info({ signal }, 'a worker leaves SIGTERM and SIGINT to its primary, which tells it when to drain')
    })
  }
  process.on('message', (m: ToWorker) => {
    if (m?.type !== 'drain') return
    if (workerStop.drain === undefined) process.exit(0)
    else workerStop.drain(m.signal)
  })
}

/**
 * Until the gateway listens (a primary: until it has its workers' handlers), SIGTERM and SIGINT
 * end the process at once — nothing is in flight yet. That is Node's default action, except
 * for PID 1 of a container (the image's entrypoint runs node itself), which a signal without a
 * handler does not end: a pod waiting on a stalled PostgreSQL or on the migration lock ignored
 * its SIGTERM until the kubelet's SIGKILL (fix-pid1-ignores-sigterm-while-starting). Exit status
 * 128 + the signal's number, as the default action reports it.
 */
const earlyStop = (signal: NodeJS.Signals): void => { process.exit(128 + (constants.signals[signal] ?? 0)) }
let stopHandled = false

export function holdEarlyStop (): void {
  if (cluster.isWorker || stopHandled) return // a worker's stop is its primary's (holdWorkerStop)
  for (const signal of STOP_SIGNALS) if (!process.listeners(signal).includes(earlyStop)) process.on(signal, earlyStop)
}

/** the handlers that drain take over from `holdEarlyStop`'s */
export function releaseEarlyStop (): void {
  stopHandled = true
  for (const signal of STOP_SIGNALS) process.removeListener(signal, earlyStop)
}

/**
 * Starts both listeners; SIGTERM/SIGINT drain and exit 0 (in a cluster worker: the primary's
 * `drain`). `server.ts` listens, `app.ts` builds.
 */
export interface ListenOptions {
  /** SIGTERM/SIGINT drain and exit (a repeat changes nothing), SIGHUP reloads (default true) */
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
  // every connection of the public listener, to cut at the timeout: closeAllConnections knows
  // only an HTTP/1.1 server's own requests — an HTTP/2 server has none, its HTTP/1.1
  // connections (ALPN) are no sessions, and an upgraded WebSocket is in neither — and a
  // connection left open was cut only by the exit, its request unlogged
  // (fix-shutdown-cut-requests-unlogged)
  const connections = new Set<Socket>()
  app.server.on('connection', (socket: Socket) => {
    connections.add(socket)
    socket.once('close', () => connections.delete(socket))
  })

  let closing: Promise<void> | undefined
  const shutdown = (signal = 'shutdown'): Promise<void> => {
    closing ??= (async () => {
      // not ready first, before any listener closes: /readyz (and portcullis_ready) say 503
      // for the whole drain; a worker reports it to the primary, which counts it out
      gateway.readiness.push(() => DRAINING_CHECK)
      logger.info({ signal }, 'draining: no new connections, waiting for in-flight requests')
      for (const session of sessions) session.close()
      // the public listener closes first and the admin one only once it has: a probe gets
      // /readyz's 503 "draining" for the whole drain. Both closed together, and a probe during
      // the drain was refused a connection, which looks like a dead process, not a draining
      // one. WebSockets are closed first (1001): an upgraded socket is no request, and would
      // hold the public listener open until the timeout. gateway.close() then closes the rest.
      const closed = (async () => {
        gateway.live.close()
        // settled, not awaited bare: an onClose hook that fails (a trace export to a collector
        // that is away) must not stop the rest from closing; gateway.close() settles it alike
        await Promise.allSettled([app.close()])
        await gateway.close()
      })()
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<'timeout'>(resolve => { timer = setTimeout(() => resolve('timeout'), config.server.shutdownTimeoutMs) })
      const outcome = await Promise.race([closed.then(() => 'closed' as const), timeout])
      clearTimeout(timer)
      if (outcome === 'timeout') {
        logger.warn({ timeoutMs: config.server.shutdownTimeoutMs }, 'in-flight requests did not finish in time; closing their connections')
        for (const session of sessions) session.destroy()
        for (const socket of connections) socket.destroy()
        admin.server.closeAllConnections()
        // their decision lines and metrics come as the connections close: wait for that
        let bound: NodeJS.Timeout | undefined
        await Promise.race([closed.catch(() => {}), new Promise<void>(resolve => { bound = setTimeout(resolve, CUT_CONNECTIONS_CLOSE_WAIT_MS) })])
        clearTimeout(bound)
      }
      logger.info('stopped')
      logger.flush()
    })()
    return closing
  }
  if (options.handleSignals !== false) {
    const stop = (signal: string): void => { shutdown(signal).then(() => process.exit(0), () => process.exit(1)) }
    if (cluster.isWorker) {
      holdWorkerStop()
      workerStop.drain = stop
      workerStop.logger = logger
    } else {
      releaseEarlyStop()
      // every repeat is handled, not only the first signal: with process.once a second
      // SIGTERM or Ctrl-C got Node's default action and ended the drain at once, exit 143 and
      // every request in flight lost (fix-second-signal-kills-drain). A repeat changes
      // nothing, however many come: a supervisor that repeats its SIGTERM must not cut the
      // drain short. SIGQUIT (Node's default action) and SIGKILL still end the process at once.
      let repeatLogged = false
      for (const signal of STOP_SIGNALS) {
        process.on(signal, () => {
          if (closing === undefined) { stop(signal); return }
          if (repeatLogged) return
          repeatLogged = true
          logger.warn({ signal, timeoutMs: config.server.shutdownTimeoutMs }, 'already draining: a repeated SIGTERM or SIGINT changes nothing (SIGQUIT or SIGKILL ends the process at once)')
        })
      }
    }
    // SIGHUP: load gateway.yaml again (in a worker the primary asks for reloads, so every
    // worker switches together)
    if (options.admin !== false) (options.reloadSignal ?? holdReloadSignal()).route(async () => await gateway.reload(), logger)
  }
  return { port, adminPort, shutdown }
}
