import { STATUS_CODES } from 'node:http'
import { collectDefaultMetrics, Counter, Gauge, Registry, type Aggregator } from 'prom-client'
import { CLIENT_CLOSED_STATUS } from '../proxy/errors.js'
import { KeySetState, type RemoteKeySetStatus } from '../tokens/issuers/remote-key-set.js'
import { CounterFamily, HistogramFamily, type CounterCell, type HistogramCell } from './families.js'
import { Mirror } from './mirror.js'

/**
 * Every metric of the gateway, defined here and nowhere else (the README's "Metrics" table
 * lists the same names). The request path calls `requestDone` / `upstream*` (cells cached
 * per route, see families.ts); everything a component already counts is read when scraped,
 * from the sources given to `watch()`, so the components keep no metrics code of their own.
 */

/** request and upstream latency: 0.5 ms (a refused request) to 30 s (the default route timeout) */
export const LATENCY_BUCKETS_SEC: readonly number[] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

// index = Math.floor(status / 100); a status outside 1xx–5xx cannot be sent by Node
const STATUS_CLASSES = ['other', '1xx', '2xx', '3xx', '4xx', '5xx'] as const

/** security event label pairs kept apart; beyond, the label reads `other` (a bug must not explode the series) */
const MAX_SECURITY_SERIES = 200

/** what a verifier counts (src/tokens/verifier.ts); a reload brings a new verifier that counts from zero */
export interface VerifierFigures {
  readonly counts: { readonly hits: number, readonly misses: number, readonly failures: number }
  readonly cacheSize: number
}

export type KeySetFigures = Pick<RemoteKeySetStatus, 'name' | 'state' | 'keys' | 'fetches' | 'failures' | 'unknownKidFetches' | 'unknownKidThrottled'>

export interface FeedFigures {
  readonly state: string
  readonly stalenessMs: number
  /** full reloads so far; a new feed counts from zero */
  readonly reloads: number
}

/** Read at each scrape; every one optional (a gateway without a store has no feed). */
export interface MetricsSources {
  /** the verifier in force (it changes with a reload) */
  verifier?: () => VerifierFigures
  denylist?: { readonly size: number }
  /** true when the gateway is ready (the same checks as /readyz) */
  ready?: () => boolean
  /** authenticated WebSockets open (src/proxy/live-sockets.ts `size`) */
  liveWebSockets?: () => number
  /** the remote key sets of the configuration in force, one per external issuer */
  keySets?: () => Iterable<{ readonly status: KeySetFigures }>
  /** the revocation feed's figures; undefined when there is none */
  revocationFeed?: () => FeedFigures | undefined
  /** the sha256 of the configuration file in force */
  configHash?: () => string
  /** reload attempts so far (app.ts keeps them: `Gateway.reloads`) */
  reloads?: () => { readonly succeeded: number, readonly failed: number }
  /** log writes dropped because stdout was not read (src/logger.ts) */
  logDrops?: () => number
  /** bytes of request bodies being read whole before forwarding (src/proxy/body-budget.ts) */
  bodyBytes?: () => number
}

export interface GatewayMetricsOptions {
  /** process_* and nodejs_* metrics, the event-loop delay among them (default true) */
  defaultMetrics?: boolean
  /** sampling resolution of the event-loop delay histogram (monitorEventLoopDelay), ms */
  eventLoopResolutionMs?: number
}

/** the cells of one route, so a request finds all it touches with one Map lookup */
class RouteCells {
  readonly durations: Array<HistogramCell | undefined> = [undefined, undefined, undefined, undefined, undefined, undefined]
  readonly requests = new Map<number, Map<string, CounterCell>>()
  upstreamHeaders: HistogramCell | undefined = undefined
  upstreamDuration: HistogramCell | undefined = undefined
}

export class GatewayMetrics {
  readonly registry = new Registry()
  readonly #routes = new Map<string, RouteCells>()
  readonly #requestDuration: HistogramFamily
  readonly #requests: CounterFamily
  readonly #upstreamHeaders: HistogramFamily
  readonly #upstreamDuration: HistogramFamily
  readonly #upstreamErrors: CounterFamily
  readonly #securityEvents: Counter<'event' | 'label'>
  readonly #securitySeries = new Set<string>()
  readonly #sources: MetricsSources = {}
  readonly #watching = new Set<keyof MetricsSources>()

  constructor (options: GatewayMetricsOptions = {}) {
    const registry = this.registry
    this.#requestDuration = new HistogramFamily(registry, {
      name: 'portcullis_request_duration_seconds',
      help: 'Time from accepting a request on the public listener to the end of its response, by route and status class.',
      labelNames: ['route', 'status_class'],
      buckets: LATENCY_BUCKETS_SEC,
    })
    this.#requests = new CounterFamily(registry, {
      name: 'portcullis_requests_total',
      help: 'Requests on the public listener by route, status and decision reason (499: the client left first).',
      labelNames: ['route', 'status', 'reason'],
    })
    this.#upstreamHeaders = new HistogramFamily(registry, {
      name: 'portcullis_upstream_headers_seconds',
      help: 'Time from sending a request upstream to the upstream\'s response headers, by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS_SEC,
    })
    this.#upstreamDuration = new HistogramFamily(registry, {
      name: 'portcullis_upstream_duration_seconds',
      help: 'Time from sending a request upstream to the end of the upstream\'s response body, by route.',
      labelNames: ['route'],
      buckets: LATENCY_BUCKETS_SEC,
    })
    this.#upstreamErrors = new CounterFamily(registry, {
      name: 'portcullis_upstream_errors_total',
      help: 'Upstream requests that failed before their response ended, by route and error code (PORTCULLIS_CLIENT_GONE: the client left).',
      labelNames: ['route', 'code'],
    })
    this.#securityEvents = new Counter({
      name: 'portcullis_security_events_total',
      help: 'Security events (src/security-events.ts) by event and its one low-cardinality field (reason, limit or action; empty when none).',
      labelNames: ['event', 'label'],
      registers: [registry],
    })
    if (options.defaultMetrics !== false) {
      collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: options.eventLoopResolutionMs ?? 10 })
    }
  }

  get contentType (): string { return this.registry.contentType }

  /** the exposition text (Prometheus 0.0.4) */
  text (): Promise<string> { return this.registry.metrics() }

  // ——— the request path: cells cached per route, a few number writes per call ———

  #route (route: string): RouteCells {
    let cells = this.#routes.get(route)
    if (cells === undefined) {
      cells = new RouteCells()
      this.#routes.set(route, cells)
    }
    return cells
  }

  /** one request answered (or abandoned: 499); `route` is '' for a request no route matched */
  requestDone (route: string, status: number, reason: string, durationSec: number): void {
    const cells = this.#route(route)
    const cls = status >= 100 && status < 600 ? (status / 100) | 0 : 0
    const duration = cells.durations[cls] ?? (cells.durations[cls] = this.#requestDuration.cell(route, STATUS_CLASSES[cls]!))
    duration.observe(durationSec)
    // a status with no registered meaning (an upstream echoing `/status/991`) is `other`
    // (the gateway's own 499 keeps its number):
    // request data must not choose how many series there are (fix-metrics-status-label)
    const code = STATUS_CODES[status] === undefined && status !== CLIENT_CLOSED_STATUS ? 0 : status
    let byReason = cells.requests.get(code)
    if (byReason === undefined) {
      byReason = new Map()
      cells.requests.set(code, byReason)
    }
    let counter = byReason.get(reason)
    if (counter === undefined) {
      counter = this.#requests.cell(route, code === 0 ? 'other' : String(code), reason)
      byReason.set(reason, counter)
    }
    counter.inc()
  }

  upstreamHeaders (route: string, sec: number): void {
    const cells = this.#route(route)
    const cell = cells.upstreamHeaders ?? (cells.upstreamHeaders = this.#upstreamHeaders.cell(route))
    cell.observe(sec)
  }

  upstreamDone (route: string, sec: number): void {
    const cells = this.#route(route)
    const cell = cells.upstreamDuration ?? (cells.upstreamDuration = this.#upstreamDuration.cell(route))
    cell.observe(sec)
  }

  /** rare (errors), so the cell is looked up by its labels */
  upstreamFailed (route: string, code: string): void {
    this.#upstreamErrors.cell(route, code).inc()
  }

  // ——— events other modules report ———

  /** a SecurityEventHook (src/security-events.ts): pass it as `onEvent` */
  readonly securityEvent = (event: string, label: string): void => {
    const key = `${event}\u0000${label}`
    if (!this.#securitySeries.has(key)) {
      if (this.#securitySeries.size >= MAX_SECURITY_SERIES) label = 'other'
      else this.#securitySeries.add(key)
    }
    this.#securityEvents.inc({ event, label })
  }

  // ——— figures read at each scrape ———

  /** Adds or replaces sources; the metrics of a source appear from its first watch on. */
  watch (sources: MetricsSources): void {
    Object.assign(this.#sources, sources)
    for (const name of Object.keys(sources) as Array<keyof MetricsSources>) {
      if (sources[name] === undefined || this.#watching.has(name)) continue
      this.#watching.add(name)
      this.#register(name)
    }
  }

  #register (name: keyof MetricsSources): void {
    const registers = [this.registry]
    const s = this.#sources
    switch (name) {
      case 'verifier': {
        const mirrors = { hits: new Mirror(), misses: new Mirror(), failures: new Mirror() }
        const counter = (field: 'hits' | 'misses' | 'failures', metric: string, help: string): void => {
          // eslint-disable-next-line no-new
          new Counter({
            name: metric,
            help,
            registers,
            collect () {
              const v = s.verifier?.()
              if (v !== undefined) this.inc(mirrors[field].delta(v, v.counts[field]))
            },
          })
        }
        counter('hits', 'portcullis_verify_cache_hits_total', 'Access tokens answered from the verify cache (time and key still checked).')
        counter('misses', 'portcullis_verify_cache_misses_total', 'Access tokens not in the verify cache, so verified (signature and claims).')
        counter('failures', 'portcullis_verify_failures_total', 'Access tokens that failed verification (any reason: expired, bad signature, unknown issuer…).')
        gauge('portcullis_verify_cache_entries', 'Verified tokens held in the verify cache.', () => s.verifier?.().cacheSize ?? 0)
        break
      }
      case 'denylist':
        gauge('portcullis_denylist_entries', 'Revocation entries held in memory.', () => s.denylist?.size ?? 0, 'max')
        break
      case 'bodyBytes':
        gauge('portcullis_request_body_buffer_bytes', 'Bytes of request bodies being read whole before forwarding (routes[].requestBuffering), at most server.requestBufferBytes per process.', () => s.bodyBytes?.() ?? 0)
        break
      case 'ready':
        gauge('portcullis_ready', '1 when the gateway is ready (the /readyz checks), else 0.', () => s.ready?.() === true ? 1 : 0, 'min')
        break
      case 'liveWebSockets':
        gauge('portcullis_websockets_open', 'WebSockets open through the gateway (closed by it when their token expires or is revoked, or a reload no longer admits them).', () => s.liveWebSockets?.() ?? 0)
        break
      case 'keySets':
        this.#registerKeySets()
        break
      case 'revocationFeed':
        this.#registerFeed()
        break
      case 'reloads': {
        const mirror = new Mirror()
        // eslint-disable-next-line no-new
        new Counter({
          name: 'portcullis_config_reloads_total',
          help: 'Configuration reloads by result (failure: the running configuration was kept).',
          labelNames: ['result'],
          registers,
          collect () {
            const r = s.reloads?.()
            if (r === undefined) return
            this.inc({ result: 'success' }, mirror.delta('success', r.succeeded))
            this.inc({ result: 'failure' }, mirror.delta('failure', r.failed))
          },
        })
        break
      }
      case 'logDrops': {
        const mirror = new Mirror()
        // eslint-disable-next-line no-new
        new Counter({
          name: 'portcullis_log_writes_dropped_total',
          help: 'Log writes dropped because the log destination was full (stdout not read); each write holds one or more lines.',
          registers,
          collect () {
            const n = s.logDrops?.()
            if (n !== undefined) this.inc(mirror.delta('dropped', n))
          },
        })
        break
      }
      case 'configHash':
        // eslint-disable-next-line no-new
        new Gauge({
          name: 'portcullis_config_info',
          help: 'Always 1; `hash` is the sha256 of the configuration file in force.',
          labelNames: ['hash'],
          registers,
          aggregator: 'first',
          collect () {
            this.reset()
            const hash = s.configHash?.()
            if (hash !== undefined) this.set({ hash }, 1)
          },
        })
        break
    }

    // the aggregator says how workers' values combine (prom-client AggregatorRegistry): a per-process count sums
    function gauge (metric: string, help: string, read: () => number, aggregator: Aggregator = 'sum'): void {
      // eslint-disable-next-line no-new
      new Gauge({ name: metric, help, registers, aggregator, collect () { this.set(read()) } })
    }
  }

  #registerKeySets (): void {
    const registers = [this.registry]
    const keySets = (): Array<{ readonly status: KeySetFigures }> => [...(this.#sources.keySets?.() ?? [])]
    const sets = (): KeySetFigures[] => keySets().map(k => k.status)
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'portcullis_jwks_state',
      help: 'State of each external issuer\'s key set: 1 for the current state (pending, ready, stale, failed), 0 for the others.',
      labelNames: ['issuer', 'state'],
      registers,
      collect () {
        this.reset()
        for (const set of sets()) {
          for (const state of Object.values(KeySetState)) this.set({ issuer: set.name, state }, set.state === state ? 1 : 0)
        }
      },
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'portcullis_jwks_keys',
      help: 'Keys usable now in each external issuer\'s key set.',
      labelNames: ['issuer'],
      registers,
      aggregator: 'max',
      collect () {
        this.reset()
        for (const set of sets()) this.set({ issuer: set.name }, set.keys)
      },
    })
    const counter = (field: 'fetches' | 'failures' | 'unknownKidFetches' | 'unknownKidThrottled', metric: string, help: string): void => {
      const mirror = new Mirror()
      // eslint-disable-next-line no-new
      new Counter({
        name: metric,
        help,
        labelNames: ['issuer'],
        registers,
        collect () {
          for (const set of keySets()) {
            const status = set.status
            // keyed by the set object: a changed issuer gets a new set, counting from zero
            this.inc({ issuer: status.name }, mirror.delta(set, status[field]))
          }
        },
      })
    }
    counter('fetches', 'portcullis_jwks_fetches_total', 'Key set fetch attempts per external issuer (each may be a discovery and a JWKS request).')
    counter('failures', 'portcullis_jwks_fetch_failures_total', 'Key set fetch attempts that failed per external issuer.')
    counter('unknownKidFetches', 'portcullis_jwks_unknown_kid_fetches_total', 'Key set fetches started by a token with an unknown kid.')
    counter('unknownKidThrottled', 'portcullis_jwks_unknown_kid_throttled_total', 'Tokens with an unknown kid that found the refetch cooldown running (no fetch).')
  }

  #registerFeed (): void {
    const registers = [this.registry]
    const read = (): FeedFigures | undefined => this.#sources.revocationFeed?.()
    const seen = new Set<string>()
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'portcullis_revocation_feed_state',
      help: 'State of the revocation feed: 1 for the current state, 0 for the others seen since start.',
      labelNames: ['state'],
      registers,
      collect () {
        this.reset()
        const feed = read()
        if (feed === undefined) return
        seen.add(feed.state)
        for (const state of seen) this.set({ state }, state === feed.state ? 1 : 0)
      },
    })
    // eslint-disable-next-line no-new
    new Gauge({
      name: 'portcullis_revocation_feed_staleness_seconds',
      help: 'Time since the denylist was last known to be current (0 while the feed is live).',
      registers,
      aggregator: 'max',
      collect () { this.set((read()?.stalenessMs ?? 0) / 1000) },
    })
    const mirror = new Mirror()
    // eslint-disable-next-line no-new
    new Counter({
      name: 'portcullis_revocation_feed_reloads_total',
      help: 'Full reloads of the denylist from the store (start, reconnects, reconciles).',
      registers,
      collect () {
        const feed = read()
        if (feed !== undefined) this.inc(mirror.delta('feed', feed.reloads))
      },
    })
  }
}
