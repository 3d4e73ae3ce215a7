import cluster, { type Worker } from 'node:cluster'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { AggregatorRegistry, Gauge, Registry } from 'prom-client'
import type { Logger } from 'pino'
import type { GatewayConfig } from './config/types.js'
import type { Gateway, ReloadResult } from './app.js'
import type { HealthCheck } from './health.js'
import { ConfigError } from './errors.js'
import errorsPlugin from '../plugins/errors.js'
import healthPlugin from '../plugins/health.js'
import adminReloadPlugin from '../plugins/admin-reload.js'

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
 * and on SIGTERM has every worker drain before it exits. SIGHUP and POST /admin/reload make
 * the primary validate the file, then every worker reload it.
 */

/** messages between the primary and its workers */
type ToWorker = { type: 'reload', id: number } | { type: 'health', id: number }
type FromWorker =
  | { type: 'listening', port: number }
  | { type: 'reloaded', id: number, result: ReloadResult }
  | { type: 'health', id: number, checks: HealthCheck[] }

export const WORKER_ENV = 'PORTCULLIS_WORKER'
const IPC_TIMEOUT_MS = 2000
/** a worker that dies this soon after it started counts as crash-looping */
const EARLY_DEATH_MS = 5000
const MAX_RESTART_DELAY_MS = 30_000

export function isWorker (): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] === '1'
}

/**
 * In a worker: answer the primary's reload and health requests. The gateway's admin
 * listener is not started in workers (the primary owns the admin port).
 */
export function serveAsWorker (gateway: Gateway, port: number): void {
  const send = (m: FromWorker): void => { process.send?.(m) }
  // the primary's /metrics asks every worker for its registry (prom-client's cluster messages)
  AggregatorRegistry.setRegistries([gateway.metrics.registry])
  new AggregatorRegistry() // eslint-disable-line no-new -- its constructor is what installs the worker's answering listener
  process.on('message', (m: ToWorker) => {
    if (m.type === 'reload') {
      gateway.reload().then(result => send({ type: 'reloaded', id: m.id, result }), (err: unknown) => {
        send({ type: 'reloaded', id: m.id, result: { ok: false, hash: gateway.config.hash, problems: [{ path: '', message: String(err) }] } })
      })
    } else if (m.type === 'health') {
      send({ type: 'health', id: m.id, checks: gateway.readiness.map(check => check()) })
    }
  })
  send({ type: 'listening', port })
}

export interface PrimaryOptions {
  config: GatewayConfig
  /** reads and validates gateway.yaml again */
  loadConfig: () => GatewayConfig
  logger: Logger
  /** extra admin routes that need the store (the admin API), registered by the caller */
  registerAdmin?: (admin: FastifyInstance) => Promise<void>
  /** closes what registerAdmin opened */
  close?: () => Promise<void>
}

interface Slot { worker: Worker, startedAt: number, listening: boolean, restarts: number }

export async function runPrimary (opts: PrimaryOptions): Promise<{ adminPort: number, shutdown: (signal?: string) => Promise<void>, workers: () => number[] }> {
  const { logger } = opts
  let config = opts.config
  const slots = new Map<number, Slot>()
  let shuttingDown = false
  let nextId = 0
  const restarts = 0
  const pending = new Map<number, { resolve: (m: FromWorker) => void }>()

  const fork = (restarts: number): void => {
    const worker = cluster.fork({ [WORKER_ENV]: '1' })
    const slot: Slot = { worker, startedAt: Date.now(), listening: false, restarts }
    slots.set(worker.id, slot)
    worker.on('message', (m: FromWorker) => {
      if (m.type === 'listening') { slot.listening = true; return }
      pending.get(m.id)?.resolve(m)
    })
    worker.on('exit', (code, signal) => {
      slots.delete(worker.id)
      if (shuttingDown) return
      // a worker died: replace it; a crash loop backs off instead of forking in a tight loop
      const early = Date.now() - slot.startedAt < EARLY_DEATH_MS
      const delayMs = early ? Math.min(MAX_RESTART_DELAY_MS, 250 * 2 ** slot.restarts) : 0
      restarts++
      logger.error({ event: 'worker_died', pid: worker.process.pid, code, signal, restartInMs: delayMs }, 'a worker died; starting a replacement')
      setTimeout(() => { if (!shuttingDown) fork(early ? slot.restarts + 1 : 0) }, delayMs).unref()
    })
  }

  /** asks every live worker; missing answers within the timeout are left out */
  const ask = async (make: (id: number) => ToWorker): Promise<Array<{ pid: number | undefined, answer: FromWorker | undefined }>> => {
    return await Promise.all([...slots.values()].filter(s => s.listening).map(async (slot) => {
      const id = ++nextId
      const answer = await new Promise<FromWorker | undefined>((resolve) => {
        const timer = setTimeout(() => { pending.delete(id); resolve(undefined) }, IPC_TIMEOUT_MS)
        pending.set(id, { resolve: (m) => { clearTimeout(timer); pending.delete(id); resolve(m) } })
        slot.worker.send(make(id))
      })
      return { pid: slot.worker.process.pid, answer }
    }))
  }

  const reload = async (): Promise<ReloadResult> => {
    let next: GatewayConfig
    try {
      next = opts.loadConfig()
    } catch (err) {
      // anything but a ConfigError is not quoted: its message may hold a value of the file
      const problems = err instanceof ConfigError ? err.problems : [{ path: '', message: `the configuration could not be loaded (${(err as Error).name})` }]
      logger.error({ event: 'config_reload_failed', problems }, 'configuration reload refused; the running configuration stays')
      return { ok: false, hash: config.hash, problems }
    }
    const answers = await ask(id => ({ type: 'reload', id }))
    const failed = answers.filter(a => a.answer?.type !== 'reloaded' || !a.answer.result.ok)
    if (failed.length > 0) {
      const problems = failed.flatMap(a => a.answer?.type === 'reloaded' ? a.answer.result.problems : [{ path: '', message: `worker ${a.pid ?? '?'} did not answer` }])
      return { ok: false, hash: config.hash, problems }
    }
    config = next
    logger.info({ event: 'config_reloaded', hash: next.hash, workers: answers.length }, 'configuration reloaded in every worker')
    return { ok: true, hash: next.hash, problems: [] }
  }

  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  await admin.register(errorsPlugin, { realm: config.server.realm })
  await admin.register(healthPlugin, {
    checks: async () => {
      const expected = config.server.workers
      const answers = await ask(id => ({ type: 'health', id }))
      const checks: HealthCheck[] = []
      const live = answers.filter(a => a.answer?.type === 'health')
      // the pod can serve while one worker is up: the primary only hands connections to listening workers
      checks.push({
        name: 'workers',
        state: live.length === 0 ? 'down' : live.length < expected ? 'degraded' : 'ok',
        reason: live.length < expected ? `${live.length} of ${expected} workers answering` : undefined,
        detail: { expected, pids: live.map(a => a.pid) },
      })
      // each worker's own checks, worst state wins per name
      const byName = new Map<string, HealthCheck>()
      const rank = { ok: 0, degraded: 1, down: 2 }
      for (const a of live) {
        for (const c of (a.answer as { checks: HealthCheck[] }).checks) {
          const prev = byName.get(c.name)
          if (prev === undefined || rank[c.state] > rank[prev.state]) byName.set(c.name, { ...c, detail: { ...c.detail, pid: a.pid } })
        }
      }
      return [...checks, ...byName.values()]
    },
  })
  // every worker's metrics, combined by each metric's aggregator (counters sum, gauges as set),
  // plus the primary's own view of the workers
  const aggregator = new AggregatorRegistry()
  const own = new Registry()
  new Gauge({ name: 'portcullis_workers', help: 'Worker processes listening on the public port.', registers: [own], collect () { this.set([...slots.values()].filter(s => s.listening).length) } }) // eslint-disable-line no-new
  new Gauge({ name: 'portcullis_worker_restarts_total', help: 'Workers replaced after they died.', registers: [own], collect () { this.set(restarts) } }) // eslint-disable-line no-new
  admin.get('/metrics', async (_request, reply) => {
    const workers = await aggregator.clusterMetrics()
    reply.type(own.contentType).send(workers + (await own.metrics()))
  })
  admin.get('/admin/workers', (_request, reply) => { reply.send({ workers: [...slots.values()].map(s => ({ pid: s.worker.process.pid, listening: s.listening, startedAt: new Date(s.startedAt).toISOString() })) }) })
  if (config.admin.token !== '') await admin.register(adminReloadPlugin, { token: config.admin.token, reload })
  await opts.registerAdmin?.(admin)

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

  let closing: Promise<void> | undefined
  const shutdown = (signal = 'shutdown'): Promise<void> => {
    closing ??= (async () => {
      shuttingDown = true
      logger.info({ signal, workers: slots.size }, 'draining every worker')
      const exits = [...slots.values()].map(s => new Promise<void>(resolve => {
        if (s.worker.isDead()) { resolve(); return }
        s.worker.once('exit', () => resolve())
        s.worker.process.kill('SIGTERM')
      }))
      // each worker bounds its own drain by server.shutdownTimeout; a little more here
      const timer = setTimeout(() => { for (const s of slots.values()) s.worker.process.kill('SIGKILL') }, config.server.shutdownTimeoutMs + 5000)
      await Promise.all(exits)
      clearTimeout(timer)
      await admin.close()
      await opts.close?.()
      logger.info('stopped')
      logger.flush()
    })()
    return closing
  }
  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    process.once(signal, () => { shutdown(signal).then(() => process.exit(0), () => process.exit(1)) })
  }
  process.on('SIGHUP', () => { reload().catch(() => {}) })
  return { adminPort, shutdown, workers: () => [...slots.values()].map(s => s.worker.process.pid ?? 0) }
}
