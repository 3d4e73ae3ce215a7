import cluster, { type Worker } from 'node:cluster'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { AggregatorRegistry, Gauge } from 'prom-client'
import type { Logger } from 'pino'
import type { GatewayConfig } from './config/types.js'
import type { Gateway, ReloadResult } from './app.js'
import { DRAINING_CHECK, isDraining, type HealthCheck } from './health.js'
import { ConfigError, type ConfigProblem } from './errors.js'
import { reloadProblems } from './reload.js'
import { deepFreeze } from './config/load.js'
import { GatewayMetrics } from './metrics/gateway-metrics.js'
import { reloadFailedEvent, SecurityEvents } from './security-events.js'
import { holdReloadSignal, releaseEarlyStop, STOP_SIGNALS, type ReloadSignal } from './server.js'
import errorsPlugin from '../plugins/errors.js'
import adminHostPlugin, { adminFrameworkErrors } from '../plugins/admin-host.js'
import healthPlugin from '../plugins/health.js'
import adminReloadPlugin from '../plugins/admin-reload.js'
import { ADMIN_MAX_PARAM_LENGTH } from '../plugins/admin-api.js'

/**
 * `server.workers: N` — N processes sharing the public port (node:cluster: the primary
 * accepts and hands connections round-robin; Node 20 has no SO_REUSEPORT). Each worker is a
 * whole gateway with its own verify cache and its own denylist fed by the revocation feed;
 * they share the store (PostgreSQL), so login throttling and revocation are fleet-wide by
 * construction. The embedded store belongs to one process: with it the config loader keeps
 * one worker (`auto`) or refuses N > 1.
 *
 * The primary does no proxying: it runs the admin listener (health with every worker's
 * readiness, metrics of all workers, reload, the admin API), replaces a worker that dies,
 * and on SIGTERM has every worker drain before it exits.
 *
 * One configuration for the whole fleet: the primary is the only process that reads
 * gateway.yaml (and the key and certificate files it names). A worker starts on the
 * configuration the primary hands it, not on the file — a worker replaced after the file was
 * edited but not reloaded would otherwise serve the edit, or crash-loop on a broken one. SIGHUP
 * and POST /admin/reload make the primary load and validate the file once and hand the result
 * to every worker; if any worker refuses it or does not answer, the ones that switched are
 * switched back and a worker that cannot confirm either is replaced, so every worker serves
 * the configuration the primary reports (fix-workers-one-configuration). Reloads run one at a
 * time; a worker that starts during one gets the outcome.
 *
 * Workers drain when the primary tells them (`drain`), never on a SIGTERM or SIGINT of their
 * own (src/server.ts `holdWorkerStop`): a signal to the whole process group reached each worker
 * twice and killed it mid-drain (fix-second-signal-kills-drain). A worker that has listened and
 * does not exit 0 during a shutdown is logged (`worker_not_drained`) and the primary exits 1.
 *
 * The primary asks every listening worker for its health each second; one that answers nothing
 * for UNRESPONSIVE_AFTER_MS (a stuck event loop) is drained and replaced
 * (fix-frozen-worker-stalls-readiness).
 */

/** messages between the primary and its workers (structured clone: `serialization: 'advanced'`) */
export type ToWorker =
  | { type: 'config', config: GatewayConfig }
  | { type: 'reload', id: number, config: GatewayConfig }
  | { type: 'health', id: number }
  | { type: 'metrics', id: number }
  /** drain and exit (src/server.ts); `signal`: why, for the worker's log */
  | { type: 'drain', signal: string }
type FromWorker =
  | { type: 'config?' }
  | { type: 'listening', port: number }
  | { type: 'reloaded', id: number, result: ReloadResult }
  | { type: 'health', id: number, checks: HealthCheck[] }
  /** the worker's registry as `getMetricsAsJSON()` gives it, for AggregatorRegistry.aggregate */
  | { type: 'metrics', id: number, metrics: object[] }

export const WORKER_ENV = 'PORTCULLIS_WORKER'
/**
 * How long the primary waits for a worker's health or metrics answer. A worker answers in about
 * a millisecond (readiness is in memory); one that has not in 500 ms has a stuck event loop. It
 * was 2 s, and one frozen worker made every /readyz take 2.0 s, which fails a probe with
 * deploy/kubernetes's timeoutSeconds: 2 (fix-frozen-worker-stalls-readiness).
 */
const WORKER_ANSWER_TIMEOUT_MS = 500
/**
 * How often the primary asks every listening worker for its health, unasked by any probe: a
 * worker that is never probed (/readyz and /metrics ask only when scraped) would never be found
 * stuck. The timer is unref'd: it never keeps the primary alive.
 */
const HEARTBEAT_INTERVAL_MS = 1000
/**
 * A listening worker that has answered no health question for this long is drained and
 * replaced, as one that does not confirm a reload is. Three heartbeats: a garbage collection or
 * a reload's compile (10,000 routes: well under a second) pauses a loop for much less, and
 * retiring a worker that was only slow costs a graceful drain and a restart, not a request.
 */
const UNRESPONSIVE_AFTER_MS = 3000
/** a reload compiles the whole configuration (10,000 routes: well under a second) */
const RELOAD_TIMEOUT_MS = 10_000
/** how long a starting worker waits for its configuration */
const CONFIG_TIMEOUT_MS = 30_000
/** a worker that dies this soon after it started counts as crash-looping */
const EARLY_DEATH_MS = 5000
const MAX_RESTART_DELAY_MS = 30_000
/**
 * A worker told to drain bounds its drain by server.shutdownTimeout; one still there
 * this much later is killed (SIGKILL). Without a deadline a stopped (SIGSTOP) or wedged worker
 * stays in the fleet for ever: counted, asked on every scrape, never replaced.
 */
const DRAIN_GRACE_MS = 5000

export function isWorker (): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1'
}

/** In a worker: the configuration to start on, from the primary (which read the file). */
export async function configFromPrimary (): Promise<GatewayConfig> {
  return await new Promise((resolve, reject) => {
    const timer = setTimeout(() => { done(); reject(new Error('the primary did not hand this worker a configuration')) }, CONFIG_TIMEOUT_MS)
    const listener = (m: ToWorker): void => {
      if (m?.type !== 'config') return
      done()
      // frozen like the loader's (a structured clone is not): nothing may change it in use
      resolve(deepFreeze(m.config))
    }
    const done = (): void => { clearTimeout(timer); process.off('message', listener) }
    process.on('message', listener)
    process.send?.({ type: 'config?' } satisfies FromWorker)
  })
}

/**
 * In a worker: answer the primary's reload, health and metrics requests (its `drain` is
 * src/server.ts's, which holds the shutdown). The gateway's admin
 * listener is not started in workers (the primary owns the admin port), and a SIGHUP of its
 * own changes nothing: the CLI holds the signal before anything else (src/server.ts
 * `holdReloadSignal`) and a worker never routes it — the primary reloads the fleet, so a
 * signal sent to the whole process group reloads once instead of ending the workers.
 */
export function serveAsWorker (gateway: Gateway, port: number): void {
  const send = (m: FromWorker): void => { process.send?.(m) }
  process.on('message', (m: ToWorker) => {
    if (m?.type === 'reload') {
      gateway.reload(deepFreeze(m.config), { fleet: true }).then(result => send({ type: 'reloaded', id: m.id, result }), (err: unknown) => {
        send({ type: 'reloaded', id: m.id, result: { ok: false, hash: gateway.config.hash, problems: [{ path: '', message: String(err) }] } })
      })
    } else if (m?.type === 'health') {
      send({ type: 'health', id: m.id, checks: gateway.readiness.map(check => check()) })
    } else if (m?.type === 'metrics') {
      gateway.metrics.registry.getMetricsAsJSON().then(metrics => send({ type: 'metrics', id: m.id, metrics }), () => {})
    }
  })
  send({ type: 'listening', port })
}

export interface PrimaryOptions {
  config: GatewayConfig
  /** reads and validates gateway.yaml again (only the primary reads it) */
  loadConfig: () => GatewayConfig
  logger: Logger
  /**
   * extra admin routes that need the store (the admin API), registered by the caller;
   * `current`: the configuration the fleet runs (reloads change it); `events`: the primary's
   * security events (its log, counted in the /metrics it serves), for every event those routes cause
   */
  registerAdmin?: (admin: FastifyInstance, primary: { current: () => GatewayConfig, events: SecurityEvents }) => Promise<void>
  /** closes what registerAdmin opened */
  close?: () => Promise<void>
  /** the SIGHUP the CLI held while starting (default: held from here on) */
  reloadSignal?: ReloadSignal
}

interface Slot {
  worker: Worker
  startedAt: number
  listening: boolean
  /** early deaths in a row before this worker (the restart backoff) */
  earlyDeaths: number
  /** the configuration this worker was handed last (undefined: none yet) */
  config: GatewayConfig | undefined
  /** set once it was told to drain: the SIGKILL if it has not exited by then */
  killTimer?: NodeJS.Timeout | undefined
  /** it has listened (connections may have been handed to it), even if retired since */
  listened: boolean
  /** health questions missed in a row (/readyz, the heartbeat) */
  missed: number
  /** when the first of those was asked (undefined: it answered the last one) */
  unansweredSinceMs: number | undefined
}

export async function runPrimary (opts: PrimaryOptions): Promise<{ adminPort: number, shutdown: (signal?: string) => Promise<void>, workers: () => number[] }> {
  const { logger } = opts
  let config = opts.config
  const slots = new Map<number, Slot>()
  let shuttingDown = false
  let nextId = 0
  // workers replaced after they died (portcullis_worker_restarts_total); fork's own count of
  // early deaths once shadowed it, and the metric stayed 0 (fix-workers-one-configuration)
  let restarts = 0
  const pending = new Map<number, { resolve: (m: FromWorker) => void }>()

  // a worker that died while it was handed its configuration is replaced by the exit handler
  const handOutFailed = (err: unknown): void => { logger.warn({ err: String(err) }, 'a configuration could not be handed to a worker') }
  // configurations go to workers whole, as objects (undefined and Infinity included)
  cluster.setupPrimary({ serialization: 'advanced' })
  const fork = (earlyDeaths: number): void => {
    const worker = cluster.fork({ [WORKER_ENV]: '1' })
    const slot: Slot = { worker, startedAt: Date.now(), listening: false, earlyDeaths, config: undefined, listened: false, missed: 0, unansweredSinceMs: undefined }
    slots.set(worker.id, slot)
    // unheard, an 'error' (a send to a worker whose IPC channel just closed:
    // ERR_IPC_CHANNEL_CLOSED) is thrown in the primary and ends the whole gateway, every worker
    // with it. The code and name only: a message may quote what was being sent
    worker.on('error', (err: NodeJS.ErrnoException) => {
      logger.warn({ event: 'worker_ipc_error', pid: worker.process.pid, code: err.code, error: err.name }, 'a worker could not be reached over IPC')
    })
    // a worker whose channel closed is handed no connections and cannot be asked anything; it
    // usually exits at once, and one that stays is drained, so that its exit replaces it
    worker.on('disconnect', () => { if (!shuttingDown) retire(slot) })
    worker.on('message', (m: FromWorker) => {
      // any message, a late health answer included, shows its event loop runs: a worker that is
      // only slow (answers after WORKER_ANSWER_TIMEOUT_MS) is never taken for a stuck one
      slot.missed = 0
      slot.unansweredSinceMs = undefined
      if (m?.type === 'config?') {
        // after any reload under way: a worker starting meanwhile gets its outcome
        serialized(async () => {
          // a worker gone meanwhile is replaced by the exit handler
          if (sendTo(worker, { type: 'config', config })) slot.config = config
        }).catch(handOutFailed)
        return
      }
      if (m?.type === 'listening') {
        slot.listening = true
        slot.listened = true
        // a reload finished while this worker started: it is handed the configuration in force
        serialized(async () => {
          if (slot.config === config || worker.isDead()) return
          const [a] = await handOut(config, [slot])
          if (a !== undefined && !reloaded(a)) replace(a)
        }).catch(handOutFailed)
        return
      }
      if (m?.type === 'reloaded' || m?.type === 'health' || m?.type === 'metrics') pending.get(m.id)?.resolve(m)
    })
    worker.on('exit', (code, signal) => {
      clearTimeout(slot.killTimer)
      slots.delete(worker.id)
      if (shuttingDown) return
      // a worker died: replace it; a crash loop backs off instead of forking in a tight loop
      const early = Date.now() - slot.startedAt < EARLY_DEATH_MS
      const delayMs = early ? Math.min(MAX_RESTART_DELAY_MS, 250 * 2 ** slot.earlyDeaths) : 0
      restarts++
      logger.error({ event: 'worker_died', pid: worker.process.pid, code, signal, restartInMs: delayMs }, 'a worker died; starting a replacement')
      setTimeout(() => { if (!shuttingDown) fork(early ? slot.earlyDeaths + 1 : 0) }, delayMs).unref()
    })
  }

  /**
   * Sends to a worker whose IPC channel is open: false if it is closed; `failed` runs if the
   * send fails later. With a callback a failed send is not an 'error' event.
   */
  const sendTo = (worker: Worker, m: ToWorker, failed: () => void = () => {}): boolean => {
    if (!worker.isConnected()) return false
    worker.send(m, (err: Error | null) => { if (err !== null) failed() })
    return true
  }

  /** asks the given workers (default: every live one); missing answers within the timeout, and workers that cannot be sent to, are left out */
  const ask = async (make: (id: number) => ToWorker, targets = [...slots.values()].filter(s => s.listening), timeoutMs = WORKER_ANSWER_TIMEOUT_MS): Promise<Array<{ slot: Slot, pid: number | undefined, answer: FromWorker | undefined }>> => {
    return await Promise.all(targets.map(async (slot) => {
      const id = ++nextId
      const answer = await new Promise<FromWorker | undefined>((resolve) => {
        const settle = (m: FromWorker | undefined): void => { clearTimeout(timer); pending.delete(id); resolve(m) }
        const timer = setTimeout(() => settle(undefined), timeoutMs)
        pending.set(id, { resolve: settle })
        if (!sendTo(slot.worker, make(id), () => settle(undefined))) settle(undefined)
      })
      return { slot, pid: slot.worker.process.pid, answer }
    }))
  }
  const reloaded = (a: { answer: FromWorker | undefined }): boolean => a.answer?.type === 'reloaded' && a.answer.result.ok

  // reloads (and the hand-out of a configuration to a starting worker) one at a time
  let queue: Promise<unknown> = Promise.resolve()
  const serialized = <T>(work: () => Promise<T>): Promise<T> => {
    const run = queue.then(work)
    queue = run.catch(() => {})
    return run
  }

  /** hands `target` to the workers; the ones that cannot confirm it are replaced (their successors start on `config`) */
  const handOut = async (target: GatewayConfig, workers: Slot[]): Promise<Array<{ slot: Slot, pid: number | undefined, answer: FromWorker | undefined }>> => {
    const answers = await ask(id => ({ type: 'reload', id, config: target }), workers, RELOAD_TIMEOUT_MS)
    for (const a of answers) if (reloaded(a)) a.slot.config = target
    return answers
  }

  /** drains a worker out of the fleet; its exit replaces it (the exit handler) */
  const retire = (slot: Slot): void => {
    // no longer handed reloads, asked for health and metrics, or counted
    slot.listening = false
    if (slot.worker.isDead() || slot.killTimer !== undefined) return
    // told, not signalled: a worker ignores SIGTERM (src/server.ts holdWorkerStop). One whose
    // channel closed cannot be told, and is killed at the deadline
    sendTo(slot.worker, { type: 'drain', signal: 'retired' })
    slot.killTimer = setTimeout(() => {
      if (slot.worker.isDead()) return
      logger.error({ event: 'worker_killed', pid: slot.worker.process.pid, afterMs: config.server.shutdownTimeoutMs + DRAIN_GRACE_MS }, 'a worker told to drain did not exit; killing it')
      slot.worker.process.kill('SIGKILL')
    }, config.server.shutdownTimeoutMs + DRAIN_GRACE_MS)
  }

  const replace = (a: { slot: Slot, pid: number | undefined }): void => {
    logger.error({ event: 'worker_replaced', pid: a.pid }, 'a worker did not confirm the configuration in force; replacing it')
    a.slot.config = undefined
    retire(a.slot)
  }

  // health answers the listening workers missed (portcullis_worker_health_misses_total)
  let healthMisses = 0
  /** asks every listening worker for its health (/readyz, the heartbeat), keeping count of the answers each one misses */
  const askHealth = async (): Promise<Array<{ slot: Slot, pid: number | undefined, answer: FromWorker | undefined }>> => {
    const askedAt = Date.now()
    const answers = await ask(id => ({ type: 'health', id }))
    for (const a of answers) {
      if (a.answer !== undefined) {
        a.slot.missed = 0
        a.slot.unansweredSinceMs = undefined
      } else if (a.slot.listening) { // not retired, nor gone, meanwhile
        a.slot.missed++
        a.slot.unansweredSinceMs ??= askedAt
        healthMisses++
      }
    }
    return answers
  }
  /** the heartbeat: a listening worker silent for UNRESPONSIVE_AFTER_MS is drained and replaced */
  const checkWorkers = async (): Promise<void> => {
    await askHealth()
    for (const slot of slots.values()) {
      if (shuttingDown || !slot.listening || slot.unansweredSinceMs === undefined) continue
      const silentMs = Date.now() - slot.unansweredSinceMs
      if (silentMs < UNRESPONSIVE_AFTER_MS) continue
      logger.error({ event: 'worker_unresponsive', pid: slot.worker.process.pid, silentMs, missed: slot.missed }, 'a worker answered no health check (a stuck event loop); draining and replacing it')
      retire(slot)
    }
  }

  // the fleet's reloads are counted and reported here, once each, as a single process's are
  // (app.ts): a reload the primary refused was neither an event nor in
  // portcullis_config_reloads_total, and one that succeeded was an event per worker
  // (fix-workers-reload-unreported)
  const own = new GatewayMetrics({ defaultMetrics: false })
  const events = new SecurityEvents({ logger, onEvent: own.securityEvent })
  const reloads = { succeeded: 0, failed: 0 }
  own.watch({ reloads: () => reloads })
  const reloadNow = async (): Promise<ReloadResult> => {
    let next: GatewayConfig
    const problemsOf = (problems: readonly ConfigProblem[]): ReloadResult => {
      logger.error({ problems, hash: config.hash }, 'configuration reload refused; the running configuration stays')
      reloads.failed++
      events.emit('config_reload_failed', reloadFailedEvent(config.hash, problems))
      return { ok: false, hash: config.hash, problems }
    }
    try {
      next = opts.loadConfig()
    } catch (err) {
      // anything but a ConfigError is not quoted: its message may hold a value of the file
      return problemsOf(err instanceof ConfigError ? err.problems : [{ path: '', message: `the configuration could not be loaded (${(err as Error).name})` }])
    }
    const restartOnly = reloadProblems(config, next)
    if (restartOnly.length > 0) return problemsOf(restartOnly)
    const previous = config
    // a worker still starting is handed the outcome once it listens
    const answers = await handOut(next, [...slots.values()].filter(s => s.listening))
    const failed = answers.filter(a => !reloaded(a))
    if (failed.length === 0) {
      config = next
      logger.info({ hash: next.hash, workers: answers.length }, 'configuration reloaded in every worker')
      reloads.succeeded++
      events.emit('config_reloaded', { configHash: next.hash, routes: next.routes.length })
      return { ok: true, hash: next.hash, problems: [] }
    }
    // one configuration for the fleet: the workers that switched go back
    const back = await handOut(previous, answers.filter(reloaded).map(a => a.slot))
    // a worker that refused kept the configuration in force; one that did not answer may still
    // apply what it was sent, and one that could not go back serves the new one: both are
    // replaced (drained), and their successors start on the configuration in force
    for (const a of [...failed.filter(f => f.answer === undefined), ...back.filter(b => !reloaded(b))]) replace(a)
    return problemsOf(failed.flatMap(a => a.answer?.type === 'reloaded' ? a.answer.result.problems : [{ path: '', message: `worker ${a.pid ?? '?'} did not answer` }]))
  }
  const reload = (): Promise<ReloadResult> => serialized(reloadNow)

  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors: adminFrameworkErrors(config.admin, config.server.realm),
    routerOptions: { maxParamLength: ADMIN_MAX_PARAM_LENGTH },
  })
  await admin.register(errorsPlugin, { realm: config.server.realm })
  await admin.register(adminHostPlugin, { admin: config.admin, realm: config.server.realm })
  await admin.register(healthPlugin, {
    checks: async () => {
      const expected = config.server.workers
      const answers = await askHealth()
      const checks: HealthCheck[] = []
      // from the moment SIGTERM arrives every worker drains and the public port closes: not
      // ready for the whole drain, while this listener stays up until the last worker exits
      // (it said 200 "1 of 2 workers answering" to a port refusing connections:
      // fix-workers-drain-still-ready)
      if (shuttingDown) checks.push(DRAINING_CHECK)
      const answered = answers.flatMap(a => a.answer?.type === 'health' ? [{ pid: a.pid, checks: a.answer.checks }] : [])
      // a worker draining (told by this primary) takes no more connections
      const live = answered.filter(a => !isDraining(a.checks))
      const draining = answered.filter(a => isDraining(a.checks)).map(a => a.pid)
      // a worker that missed its answer is named: it may be stuck, and is replaced if it stays so
      const silent = answers.filter(a => a.answer === undefined && a.slot.listening).map(a => a.pid)
      // the pod can serve while one worker is up: the primary only hands connections to listening workers
      checks.push({
        name: 'workers',
        state: live.length === 0 ? 'down' : live.length < expected ? 'degraded' : 'ok',
        reason: live.length < expected ? `${live.length} of ${expected} workers answering${draining.length > 0 ? `, ${draining.length} draining` : ''}${silent.map(pid => `, worker ${pid ?? '?'} not answering`).join('')}` : undefined,
        detail: { expected, pids: live.map(a => a.pid), ...(draining.length > 0 ? { draining } : {}), ...(silent.length > 0 ? { notAnswering: silent } : {}) },
      })
      // each worker's own checks, worst state wins per name
      const byName = new Map<string, HealthCheck>()
      const rank = { ok: 0, degraded: 1, down: 2 }
      for (const a of live) {
        for (const c of a.checks) {
          const prev = byName.get(c.name)
          if (prev === undefined || rank[c.state] > rank[prev.state]) byName.set(c.name, { ...c, detail: { ...c.detail, pid: a.pid } })
        }
      }
      return [...checks, ...byName.values()]
    },
  })
  // every worker's metrics and the primary's own, combined by each metric's aggregator
  // (counters sum, gauges as set): the primary's are its view of the workers and the security
  // events of its admin API, counted as a single process counts them (app.ts); they once went
  // unlogged and uncounted (fix-workers-admin-audit)
  new Gauge({ name: 'portcullis_workers', help: 'Worker processes listening on the public port.', registers: [own.registry], collect () { this.set([...slots.values()].filter(s => s.listening).length) } }) // eslint-disable-line no-new
  new Gauge({ name: 'portcullis_worker_restarts_total', help: 'Workers replaced after they died.', registers: [own.registry], collect () { this.set(restarts) } }) // eslint-disable-line no-new
  new Gauge({ name: 'portcullis_worker_health_misses_total', help: `Health questions a listening worker did not answer within ${WORKER_ANSWER_TIMEOUT_MS} ms.`, registers: [own.registry], collect () { this.set(healthMisses) } }) // eslint-disable-line no-new
  admin.get('/metrics', async (_request, reply) => {
    // a worker that does not answer in time is left out of this scrape
    const answers = await ask(id => ({ type: 'metrics', id }))
    const workers = answers.flatMap(a => a.answer?.type === 'metrics' ? [a.answer.metrics] : [])
    const all = AggregatorRegistry.aggregate([...workers, await own.registry.getMetricsAsJSON()])
    reply.type(own.contentType).send(await all.metrics())
  })
  admin.get('/admin/workers', (_request, reply) => { reply.send({ workers: [...slots.values()].map(s => ({ pid: s.worker.process.pid, listening: s.listening, startedAt: new Date(s.startedAt).toISOString() })) }) })
  if (config.admin.token !== '') await admin.register(adminReloadPlugin, { token: config.admin.token, reload })
  await opts.registerAdmin?.(admin, { current: () => config, events })

  // the admin port first: a port already taken fails the start before any worker exists
  // (its /readyz says "not ready" until the workers answer)
  try {
    await admin.listen({ host: config.admin.host, port: config.admin.port })
  } catch (err) {
    await admin.close()
    await opts.close?.()
    throw err
  }
  for (let i = 0; i < config.server.workers; i++) fork(0)
  const adminPort = (admin.server.address() as { port: number }).port
  logger.info({ workers: config.server.workers, adminPort }, 'portcullis primary: workers started')
  // one heartbeat at a time: a round waits up to WORKER_ANSWER_TIMEOUT_MS
  let beating = false
  const heartbeat = setInterval(() => {
    if (shuttingDown || beating) return
    beating = true
    checkWorkers().catch(() => {}).finally(() => { beating = false })
  }, HEARTBEAT_INTERVAL_MS)
  heartbeat.unref()

  let closing: Promise<void> | undefined
  // workers that had listened and died during the shutdown instead of draining
  let notDrained = 0
  const shutdown = (signal = 'shutdown'): Promise<void> => {
    closing ??= (async () => {
      shuttingDown = true
      clearInterval(heartbeat)
      logger.info({ signal, workers: slots.size }, 'draining every worker')
      const exits = [...slots.values()].map(s => new Promise<void>(resolve => {
        if (s.worker.isDead()) { resolve(); return }
        s.worker.once('exit', (code: number | null, killedBy: string | null) => {
          // its requests in flight were lost (a signal of its own killed it before workers
          // ignored them: fix-second-signal-kills-drain; a crash; the deadline below)
          if (s.listened && (killedBy !== null || code !== 0)) {
            notDrained++
            logger.warn({ event: 'worker_not_drained', pid: s.worker.process.pid, code, signal: killedBy }, 'a worker died during the shutdown instead of draining')
          }
          resolve()
        })
        // told, not signalled (a worker ignores SIGTERM); one that cannot be told (its channel
        // closed) is killed at the deadline
        sendTo(s.worker, { type: 'drain', signal })
      }))
      // each worker bounds its own drain by server.shutdownTimeout; a little more here
      const afterMs = config.server.shutdownTimeoutMs + DRAIN_GRACE_MS
      const timer = setTimeout(() => {
        for (const s of slots.values()) {
          if (s.worker.isDead()) continue
          logger.error({ event: 'worker_killed', pid: s.worker.process.pid, afterMs }, 'a worker told to drain did not exit; killing it')
          s.worker.process.kill('SIGKILL')
        }
      }, afterMs)
      await Promise.all(exits)
      clearTimeout(timer)
      await admin.close()
      await opts.close?.()
      if (notDrained > 0) logger.error({ notDrained }, 'stopped; workers died instead of draining, with the requests they had in flight')
      else logger.info('stopped')
      logger.flush()
    })()
    return closing
  }
  // every repeat is handled: with process.once a second SIGTERM or Ctrl-C got Node's default
  // action and ended the primary mid-drain. A repeat changes nothing; SIGQUIT (Node's default
  // action) and SIGKILL still end the process at once (fix-second-signal-kills-drain)
  let repeatLogged = false
  releaseEarlyStop()
  for (const signal of STOP_SIGNALS) {
    process.on(signal, () => {
      if (closing === undefined) {
        shutdown(signal).then(() => process.exit(notDrained > 0 ? 1 : 0), () => process.exit(1))
        return
      }
      if (repeatLogged) return
      repeatLogged = true
      logger.warn({ signal }, 'already draining every worker: a repeated SIGTERM or SIGINT changes nothing (SIGQUIT or SIGKILL ends the primary at once)')
    })
  }
  (opts.reloadSignal ?? holdReloadSignal()).route(reload, logger)
  return { adminPort, shutdown, workers: () => [...slots.values()].map(s => s.worker.process.pid ?? 0) }
}
