import { randomUUID } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import { constants as h2, Http2ServerResponse } from 'node:http2'
import type { Duplex } from 'node:stream'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import type { Logger } from 'pino'
import type { GatewayConfig } from './config/types.js'
import { createLogger, droppedLogWrites } from './logger.js'
import { Denylist } from './pipeline/denylist.js'
import { HeaderRewriter } from './pipeline/headers.js'
import { socketRefusal } from './pipeline/pipeline.js'
import { trustFunction } from './pipeline/trust.js'
import { compileRuntime, KeySetRegistry, type Runtime, type RuntimeHolder, type Shared } from './runtime.js'
import { PoolRegistry } from './proxy/pools.js'
import { LiveSockets } from './proxy/live-sockets.js'
import { HeldBodyBytes } from './proxy/body-budget.js'
import errorsPlugin, { sendError, toGatewayError } from '../plugins/errors.js'
import adminHostPlugin, { adminFrameworkErrors } from '../plugins/admin-host.js'
import edgePlugin from '../plugins/edge.js'
import proxyPlugin from '../plugins/proxy.js'
import jwksPlugin from '../plugins/jwks.js'
import accessLogPlugin from '../plugins/access-log.js'
import healthPlugin from '../plugins/health.js'
import metricsPlugin from '../plugins/metrics.js'
import tracingPlugin from '../plugins/tracing.js'
import { GatewayMetrics } from './metrics/gateway-metrics.js'
import sessionsPlugin from '../plugins/sessions.js'
import adminApiPlugin, { ADMIN_MAX_PARAM_LENGTH } from '../plugins/admin-api.js'
import adminReloadPlugin from '../plugins/admin-reload.js'
import { SessionService } from './sessions/service.js'
import { RevocationFeed } from './sessions/revocation-feed.js'
import { LoginThrottle } from './sessions/throttle.js'
import { reloadFailedEvent, SecurityEvents } from './security-events.js'
import type { Store } from './sessions/store.js'
import { reloadProblems } from './reload.js'
import { LifetimeHistory } from './tokens/lifetimes.js'
import { ConfigError, CONNECT_REFUSED_MESSAGE, ErrorCode, REQUEST_TIMEOUT_MESSAGE, type ConfigProblem } from './errors.js'
import type { HealthCheck } from './health.js'

export interface GatewayDeps {
  /** epoch ms; tests inject one instead of sleeping */
  clock?: () => number
  /** a pino logger; default: JSON to stdout through an asynchronous destination */
  logger?: Logger
  denylist?: Denylist
  /**
   * The session store (PostgreSQL or embedded). With one, the gateway serves the auth
   * endpoints, the admin API and follows revocations; it takes ownership and closes it.
   * Without one it is a pure verifier (tests of the core, benchmarks).
   */
  store?: Store
  /**
   * Reads and validates the configuration file again (reload); the CLI passes one reading
   * gateway.yaml with the process environment. Without it, `reload()` refuses.
   */
  loadConfig?: () => GatewayConfig
  /** the metrics registry (tests pass their own; default: a new one) */
  metrics?: GatewayMetrics
  /** how long finished spans wait to be exported together (default 5 s; tests shorten it) */
  traceExportDelayMs?: number
}

export interface ReloadResult {
  ok: boolean
  /** sha256 of the file in force after the attempt */
  hash: string
  problems: readonly ConfigProblem[]
}

/** The assembled gateway: the public listener, the admin listener and the core they share. */
export interface Gateway {
  /** the configuration in force (changes with a reload) */
  readonly config: GatewayConfig
  /** the compiled configuration in force */
  readonly runtime: Runtime
  app: FastifyInstance
  admin: FastifyInstance
  denylist: Denylist
  logger: Logger
  live: LiveSockets
  metrics: GatewayMetrics
  /** readiness checks (src/health.ts); components push theirs here */
  readiness: Array<() => HealthCheck>
  sessions: { service: SessionService, feed: RevocationFeed, store: Store } | undefined
  /**
   * Switches to a new, already validated configuration: routes, policies, keys, issuers and
   * mappings change in one assignment; in-flight requests finish on the old ones. Throws
   * ConfigError (nothing changed) when the new file changes what only a restart can.
   */
  apply: (config: GatewayConfig) => Promise<void>
  /**
   * Loads the configuration file again and applies it whole (SIGHUP, `portcullis reload`,
   * POST /admin/reload) — or applies `next`, a configuration already loaded (a worker is
   * handed the one its primary loaded: src/workers.ts). On failure nothing changes and every
   * problem is logged. `fleet`: the primary counts this reload and reports its outcome (a
   * worker's part of a fleet reload is neither counted nor an event of its own).
   */
  reload: (next?: GatewayConfig, options?: { fleet?: boolean }) => Promise<ReloadResult>
  /** reload outcomes so far, for the metrics */
  readonly reloads: { succeeded: number, failed: number, lastAt: number | undefined }
  close: () => Promise<void>
}

// expired sessions and revocations, and sealed successors past the reuse grace, leave the store
const PURGE_INTERVAL_MS = 300_000

/**
 * Identity providers whose keys are missing or not refreshing: the gateway still serves (its
 * own tokens and the other issuers'), so this is `degraded`, never `down` — an unreachable
 * IdP must not take the fleet out of the load balancer.
 */
function issuersCheck (runtime: Runtime): HealthCheck {
  const detail: Record<string, unknown> = {}
  const problems: string[] = []
  for (const issuer of runtime.issuers) {
    const st = issuer.keys.status
    detail[issuer.name] = { state: st.state, keys: st.keys, lastError: st.lastError?.code }
    if (st.state !== 'ready') problems.push(`${issuer.name} keys ${st.state}${st.lastError === undefined ? '' : ` (${st.lastError.code})`}`)
  }
  return { name: 'issuers', state: problems.length === 0 ? 'ok' : 'degraded', reason: problems.length === 0 ? undefined : problems.join('; '), detail }
}

/**
 * The public listener's logger as Fastify sees it: no child logger per request (one costs on
 * every request; the lines that need the request id log it). Fastify asks its child-logger
 * factory for one per request, and checks the seven methods of what a factory of our own
 * returns, each time (`validateLogger`, ~540 instructions a request: bench/icount.ts); with
 * its default factory it calls `child()`, which this view of the pino logger answers with
 * itself. All else is the pino logger's, through the prototype.
 */
function requestLogger (logger: Logger): FastifyBaseLogger {
  const view = Object.create(logger) as FastifyBaseLogger
  Object.defineProperty(view, 'child', { value: () => view })
  return view
}

function secureContextOptions (tls: NonNullable<GatewayConfig['server']['tls']>): { key: string, cert: string, ca?: string, minVersion: 'TLSv1.2' | 'TLSv1.3' } {
  return { key: tls.keyPem, cert: tls.certPem, ...(tls.caPem === undefined ? {} : { ca: tls.caPem }), minVersion: tls.minVersion }
}

/**
 * HTTP/2 limits the listener advertises. Node's defaults allow 2³²−1 concurrent streams per
 * connection, so one connection could hold a route's whole queue (1,000 streams on one TLS
 * connection: 942 other requests answered 503 upstream_busy); nginx allows 128
 */
const HTTP2_SETTINGS = { maxConcurrentStreams: 128 }
/**
 * How often Node looks for connections past server.requestTimeout. Its default, 30 s, let a
 * client stall a request up to 30 s longer than the timeout said (3 s: closed after 9.5 s)
 */
const CONNECTIONS_CHECKING_INTERVAL_MS = 1000
/**
 * The longest a TLS handshake may take, at most server.requestTimeout. Node's default is 120 s:
 * a connection that sent no ClientHello, or five bytes of one, held a socket for two minutes
 * at no cost to its sender, where the plain listener drops a silent one at requestTimeout
 * (fix-tls-handshake-unbounded). A real client's handshake takes a few round trips.
 */
const MAX_TLS_HANDSHAKE_MS = 10_000

const CLIENT_ERROR_BODY = JSON.stringify({ statusCode: 400, code: 'bad_request', message: 'the request is malformed' })

/** what Node's parser refused (or timed out), as a status, its reason phrase, a code and a message */
const CLIENT_ERRORS: Record<string, readonly [number, string, string, string]> = {
  HPE_HEADER_OVERFLOW: [431, 'Request Header Fields Too Large', 'headers_too_large', 'the request headers are too large'],
  // server.requestTimeout passed before the request was whole (a slow or stalled client)
  ERR_HTTP_REQUEST_TIMEOUT: [408, 'Request Timeout', ErrorCode.requestTimeout, REQUEST_TIMEOUT_MESSAGE],
}

/** Node's parser refused the request (bad request line, bad header) or it timed out: a JSON 4xx, then close. */
function writeClientError (err: NodeJS.ErrnoException, socket: Duplex): void {
  // a TLS failure (a handshake past its timeout, a bad ClientHello) reaches here too (Node's
  // HTTP/2 server passes tlsClientError on): no HTTP answer can cross a handshake that never
  // finished — written, it waited for one, and the socket stayed open (fix-tls-handshake-unbounded)
  if (err.code === 'ECONNRESET' || !socket.writable || isTlsFailure(err.code)) { socket.destroy(); return }
  const known = CLIENT_ERRORS[err.code ?? '']
  const [status, phrase, body] = known === undefined
    ? [400, 'Bad Request', CLIENT_ERROR_BODY]
    : [known[0], known[1], JSON.stringify({ statusCode: known[0], code: known[2], message: known[3] })]
  socket.end(`HTTP/1.1 ${status} ${phrase}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

function isTlsFailure (code: string | undefined): boolean {
  return code !== undefined && (code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_'))
}

const CONNECT_REFUSED = JSON.stringify({ statusCode: 405, code: ErrorCode.methodNotAllowed, message: CONNECT_REFUSED_MESSAGE })

/**
 * CONNECT asks for a tunnel, which a gateway in front of HTTP services never opens: a JSON
 * 405 (RFC 9110 §15.5.6: an empty Allow, no method reaches that target), then the stream or
 * the connection is closed. Without this listener Node answered an HTTP/2 CONNECT with a
 * bare 405 and left its stream open (each held until the whole connection closed), and
 * closed an HTTP/1.1 one without a word (fix-h2-connect-stream-never-ends).
 */
function refuseConnect (req: IncomingMessage, out: Duplex | Http2ServerResponse): void {
  const id = HeaderRewriter.requestId(req.headers['x-request-id'], randomUUID)
  if (out instanceof Http2ServerResponse) {
    out.writeHead(405, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(CONNECT_REFUSED), 'cache-control': 'no-store', allow: '', 'x-request-id': id })
    // RST_STREAM(NO_ERROR) once the answer is out: the client may stop sending (RFC 9113 §8.1)
    out.end(CONNECT_REFUSED, () => { if (!out.stream.closed) out.stream.close(h2.NGHTTP2_NO_ERROR) })
    return
  }
  out.on('error', () => {})
  if (!out.writable) { out.destroy(); return }
  out.end(`HTTP/1.1 405 Method Not Allowed\r\nconnection: close\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(CONNECT_REFUSED)}\r\ncache-control: no-store\r\nallow: \r\nx-request-id: ${id}\r\n\r\n${CONNECT_REFUSED}`, () => out.destroy())
}

/** Builds (but does not start) the gateway from a validated configuration. Everything per-route is compiled here. */
export async function buildGateway (initial: GatewayConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const clock = deps.clock ?? Date.now
  const logger = deps.logger ?? createLogger(initial.logging.level)
  const metrics = deps.metrics ?? new GatewayMetrics()
  // security events: one line each (never a secret), counted in portcullis_security_events_total
  const events = new SecurityEvents({ logger, onEvent: metrics.securityEvent })
  const denylist = deps.denylist ?? new Denylist()
  const trust = trustFunction(initial.server.trustProxy)
  const live = new LiveSockets(denylist, clock)
  // a key an identity provider withdraws closes the WebSockets its tokens opened
  const keySets = new KeySetRegistry({ onWithdrawn: () => { live.recheck() } })
  const bodyBytes = new HeldBodyBytes()
  const shared: Shared = { pools: new PoolRegistry(), keySets, denylist, live, trust, clock, logger, timing: metrics, lifetimes: new LifetimeHistory(), bodyBytes }
  const holder: RuntimeHolder = { current: compileRuntime(initial, shared) }
  const inForce = (config: GatewayConfig): void => { shared.lifetimes?.apply(config.tokens.maxTokenLifetimeSec, Math.floor(clock() / 1000), config.tokens.clockSkewSec) }
  inForce(initial)
  const readiness: Array<() => HealthCheck> = [() => issuersCheck(holder.current)]

  const tls = initial.server.tls
  const options: FastifyServerOptions & Record<string, unknown> = {
    // HTTPS on the public listener when server.tls is set; HTTP/2 with HTTP/1.1 still offered (ALPN)
    ...(tls === undefined
      ? {}
      : {
          https: {
            ...secureContextOptions(tls),
            allowHTTP1: true,
            settings: HTTP2_SETTINGS,
            connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS,
            handshakeTimeout: Math.min(initial.server.requestTimeoutMs, MAX_TLS_HANDSHAKE_MS),
          },
        }),
    http: { connectionsCheckingInterval: CONNECTIONS_CHECKING_INTERVAL_MS },
    // an HTTP/2 connection idle for keepAliveTimeout is closed, as an HTTP/1.1 one is (Fastify's default: 72 s)
    ...(initial.server.http2 ? { http2: true, http2SessionTimeout: initial.server.keepAliveTimeoutMs } : {}),
    loggerInstance: requestLogger(logger),
    logController: new LogController({ disableRequestLogging: true }), // replaced by one decision line per request
    requestIdHeader: false,
    genReqId: (req) => HeaderRewriter.requestId(req.headers['x-request-id'], randomUUID),
    // the one trust decision (pipeline/trust.ts), shared with the forwarding headers
    trustProxy: initial.server.trustProxy === false ? false : trust,
    requestTimeout: initial.server.requestTimeoutMs,
    keepAliveTimeout: initial.server.keepAliveTimeoutMs,
    bodyLimit: initial.server.bodyLimitBytes,
    // matching ignores case so /API/Admin cannot slip past a guard on /api/admin
    routerOptions: { caseSensitive: false, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false },
    return503OnClosing: true,
    // errors raised before routing (an undecodable URL) get the same JSON shape as ours
    frameworkErrors: (err, _request, reply) => { sendError(reply, toGatewayError(err), initial.server.realm) },
    clientErrorHandler: writeClientError,
  }
  // one instance type for the plugins: HTTPS and HTTP/2 requests reach them through Node's
  // compatibility API (IncomingMessage/ServerResponse-shaped), which is all they use
  const app = Fastify(options) as unknown as FastifyInstance
  if (initial.server.http2) {
    // Fastify gives these to an HTTP/1 server only. Node applies them to the HTTP/1.1
    // connections an HTTP/2 listener accepts (ALPN) as well, with its own defaults otherwise:
    // such a connection stayed open idle for ever after a request (fix-h2-review), and a
    // request trickled over one had 300 s (60 s for its header block) instead of
    // server.requestTimeout, checked every 30 s (fix-h2-http1-request-timeout)
    const server = app.server as unknown as { keepAliveTimeout: number, requestTimeout: number, headersTimeout: number, connectionsCheckingInterval: number }
    server.keepAliveTimeout = initial.server.keepAliveTimeoutMs
    // read when the server starts listening; the option of that name is ignored there (30 s)
    server.connectionsCheckingInterval = CONNECTIONS_CHECKING_INTERVAL_MS
    server.requestTimeout = initial.server.requestTimeoutMs
  }
  // Fastify leaves headersTimeout at Node's 60 s, and with headersTimeout above requestTimeout
  // Node's connection check let a request whose headers had arrived run on to 60 s: a body
  // trickled a byte at a time held its upstream connection far past server.requestTimeout
  // (fix-http1-body-timeout), on every listener
  const nodeServer = app.server as unknown as { headersTimeout: number }
  nodeServer.headersTimeout = Math.min(nodeServer.headersTimeout, initial.server.requestTimeoutMs)
  app.server.on('connect', refuseConnect)
  await app.register(errorsPlugin, { realm: initial.server.realm })
  await app.register(edgePlugin, { holder, requestTimeoutMs: initial.server.requestTimeoutMs })
  // traces: nothing at all is registered when telemetry.otlp is absent
  await app.register(tracingPlugin, { otlp: initial.telemetry.otlp, exportDelayMs: deps.traceExportDelayMs, trust })
  if (initial.logging.decisions) await app.register(accessLogPlugin, { logger })
  await app.register(jwksPlugin)
  const sessions = deps.store === undefined ? undefined : await wireSessions(deps.store)
  await app.register(proxyPlugin, { clock })

  const admin = Fastify({
    loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    frameworkErrors: adminFrameworkErrors(initial.admin, initial.server.realm),
    routerOptions: { maxParamLength: ADMIN_MAX_PARAM_LENGTH },
  })
  await admin.register(errorsPlugin, { realm: initial.server.realm })
  await admin.register(adminHostPlugin, { admin: initial.admin, realm: initial.server.realm })
  await admin.register(healthPlugin, {
    checks: () => readiness.map(check => check()),
  })
  await admin.register(metricsPlugin, {
    gateway: app,
    metrics,
    verifier: () => holder.current.verifier,
    denylist,
    ready: () => readiness.every(check => check().state !== 'down'),
    liveWebSockets: () => live.size,
    keySets: () => holder.current.issuers.map(i => i.keys),
    revocationFeed: () => sessions === undefined
      ? undefined
      : { state: sessions.feed.status.state, stalenessMs: sessions.feed.health().stalenessMs, reloads: sessions.feed.status.reloads },
    configHash: () => holder.current.config.hash,
    reloads: () => reloads,
    logDrops: droppedLogWrites,
    bodyBytes: () => bodyBytes.bytes,
  })
  if (sessions !== undefined && initial.admin.token !== '') {
    await admin.register(adminApiPlugin, { token: initial.admin.token, service: sessions.service, store: sessions.store, selfIssuer: () => holder.current.config.tokens.issuer, trustedIssuers: () => holder.current.config.issuers.map(i => i.issuer), events })
  }
  if (initial.admin.token !== '') await admin.register(adminReloadPlugin, { token: initial.admin.token, reload: async () => await reload() })

  /** login/refresh/logout on the public listener, revocations followed from the store */
  async function wireSessions (store: Store): Promise<NonNullable<Gateway['sessions']>> {
    const t = initial.tokens
    const service = new SessionService({
      store,
      clock,
      // the signing key of the configuration in force (key rotation by reload)
      signAccessToken: (input) => holder.current.signer.sign(input),
      throttle: new LoginThrottle({ store, clock, logger, settings: initial.login.throttle }),
      events,
      options: {
        refreshTokenTtlSec: t.refreshTokenTtlSec,
        sessionMaxAgeSec: t.sessionMaxAgeSec,
        reuseGraceSec: t.refresh.reuseGraceSec,
        accessTokenTtlSec: t.accessTokenTtlSec,
        clockSkewSec: t.clockSkewSec,
      },
    })
    const feed = new RevocationFeed({
      store,
      denylist,
      clock,
      logger,
      heartbeatIntervalMs: initial.revocation.heartbeatIntervalMs,
      reconcileIntervalMs: initial.revocation.reconcileIntervalMs,
      maxStalenessMs: initial.revocation.maxStalenessMs,
    })
    // the denylist is complete before the first request is served (fail closed)
    await feed.start()
    // the store away: degraded (keep serving with the last denylist; a missed revocation is
    // bounded by accessTokenTtl), down only past revocation.maxStaleness
    readiness.push(() => {
      const h = feed.health()
      return { name: 'revocation', state: !h.ready ? 'down' : h.degraded ? 'degraded' : 'ok', reason: h.reason, detail: { stalenessMs: h.stalenessMs } }
    })
    await app.register(sessionsPlugin, { config: initial, service, clock })
    // expired refresh tokens, sessions and revocations leave the database; idempotent, so
    // every replica may run it
    const purge = setInterval(() => {
      service.purgeExpired().catch((err: unknown) => logger.warn({ err: String(err) }, 'purge of expired sessions failed'))
    }, PURGE_INTERVAL_MS)
    purge.unref()
    app.addHook('onClose', async () => { clearInterval(purge) })
    return { service, feed, store }
  }

  async function apply (next: GatewayConfig): Promise<void> {
    const problems: ConfigProblem[] = reloadProblems(holder.current.config, next)
    if (problems.length > 0) throw new ConfigError(problems, next.source)
    const runtime = compileRuntime(next, shared)
    const nextTls = next.server.tls
    if (nextTls !== undefined && JSON.stringify(nextTls) !== JSON.stringify(holder.current.config.server.tls)) {
      // new handshakes use the new certificate; open connections keep theirs
      (app.server as unknown as { setSecureContext: (o: object) => void }).setSecureContext(secureContextOptions(nextTls))
    }
    holder.current = runtime // the one switch: requests from here on see the new configuration
    inForce(next)
    shared.keySets.retain(new Set(runtime.issuers.map(i => i.keys)))
    // open WebSockets stay only if the new configuration would admit their handshake (an
    // issuer, key or audience it dropped, a route it removed or tightened closes them),
    // checked once the new key sets have their keys — not awaited: an identity provider
    // slow to answer must not hold the reload up
    Promise.all(runtime.issuers.map(i => i.keys.whenSettled()))
      .then(async () => { if (holder.current === runtime) await live.reload({ verify: (token, nowMs) => runtime.verifier.verify(token, nowMs), refusal: (url, token) => socketRefusal(runtime, url, token) }, runtime.generation) }) // unless a later reload replaced it
      .catch((err: unknown) => { logger.warn({ err: String(err) }, 'checking open WebSockets against the new configuration failed') })
    // pools no route uses any more close once their in-flight requests are done (not awaited:
    // a long request must not hold the reload up)
    shared.pools.retain(runtime.pools).catch((err: unknown) => { logger.warn({ err: String(err) }, 'closing a retired upstream pool failed') })
  }

  const reloads = { succeeded: 0, failed: 0, lastAt: undefined as number | undefined }
  async function reload (given?: GatewayConfig, options: { fleet?: boolean } = {}): Promise<ReloadResult> {
    const reported = options.fleet !== true
    reloads.lastAt = clock()
    let problems: readonly ConfigProblem[]
    try {
      if (given === undefined && deps.loadConfig === undefined) throw new ConfigError([{ path: '', message: 'this gateway was started without a configuration file to reload' }], 'reload')
      const next = given ?? deps.loadConfig!()
      await apply(next)
      if (reported) {
        reloads.succeeded++
        events.emit('config_reloaded', { configHash: next.hash, routes: next.routes.length })
      }
      return { ok: true, hash: next.hash, problems: [] }
    } catch (err) {
      // anything but a ConfigError is not quoted: its message may hold a value of the file
      problems = err instanceof ConfigError ? err.problems : [{ path: '', message: `the configuration could not be loaded (${(err as Error).name})` }]
      // every problem in the log; the event line names their paths (never a value)
      logger.error({ problems, hash: holder.current.config.hash }, 'configuration reload refused; the running configuration stays')
      if (reported) {
        reloads.failed++
        events.emit('config_reload_failed', reloadFailedEvent(holder.current.config.hash, problems))
      }
      return { ok: false, hash: holder.current.config.hash, problems }
    }
  }

  return {
    get config () { return holder.current.config },
    get runtime () { return holder.current },
    app,
    admin,
    denylist,
    logger,
    live,
    metrics,
    readiness,
    sessions,
    apply,
    reload,
    reloads,
    close: async () => {
      live.close()
      await Promise.allSettled([app.close(), admin.close()])
      shared.keySets.close()
      await shared.pools.close()
      if (sessions !== undefined) {
        await sessions.feed.close()
        await sessions.store.close()
      }
    },
  }
}
