import { randomUUID } from 'node:crypto'
import type { Duplex } from 'node:stream'
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify'
import { pino, type Logger } from 'pino'
import type { GatewayConfig } from './config/types.js'
import { buildKeySet, type KeySet } from './tokens/keys.js'
import { TokenSigner } from './tokens/signer.js'
import { TokenVerifier } from './tokens/verifier.js'
import { Denylist } from './pipeline/denylist.js'
import { HeaderRewriter } from './pipeline/headers.js'
import errorsPlugin, { sendError, toGatewayError } from '../plugins/errors.js'
import authPlugin from '../plugins/auth.js'
import proxyPlugin from '../plugins/proxy.js'
import jwksPlugin from '../plugins/jwks.js'
import accessLogPlugin from '../plugins/access-log.js'
import healthPlugin from '../plugins/health.js'
import metricsPlugin from '../plugins/metrics.js'
import sessionsPlugin from '../plugins/sessions.js'
import adminApiPlugin from '../plugins/admin-api.js'
import { SessionService } from './sessions/service.js'
import { RevocationFeed } from './sessions/revocation-feed.js'
import { LoginThrottle } from './sessions/throttle.js'
import type { Store } from './sessions/store.js'

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
}

/** The assembled gateway: the public listener, the admin listener and the core they share. */
export interface Gateway {
  config: GatewayConfig
  app: FastifyInstance
  admin: FastifyInstance
  keys: KeySet
  signer: TokenSigner
  verifier: TokenVerifier
  denylist: Denylist
  logger: Logger
  /** reasons the gateway is not ready; components push checks here */
  readiness: Array<() => string | undefined>
  sessions: { service: SessionService, feed: RevocationFeed, store: Store } | undefined
  close: () => Promise<void>
}

/** Default logger: JSON lines, asynchronous and buffered so logging never blocks the hot path. */
export function defaultLogger (level: string): Logger {
  return pino({
    level,
    base: { pid: process.pid },
    // belt and braces: nothing logs these on purpose
    redact: { paths: ['req.headers.authorization', 'req.headers.cookie', 'password', 'refresh_token', 'access_token'], censor: '[redacted]' },
  }, pino.destination({ dest: 1, sync: false, minLength: 4096 }))
}

const PURGE_INTERVAL_MS = 3_600_000

const CLIENT_ERROR_BODY = JSON.stringify({ statusCode: 400, code: 'bad_request', message: 'the request is malformed' })

/** Node's parser refused the request (bad request line, bad header): a JSON 400, then close. */
function writeClientError (err: NodeJS.ErrnoException, socket: Duplex): void {
  if (err.code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return }
  const status = err.code === 'HPE_HEADER_OVERFLOW' ? 431 : 400
  const body = status === 431 ? CLIENT_ERROR_BODY.replace('400', '431').replace('the request is malformed', 'the request headers are too large') : CLIENT_ERROR_BODY
  socket.end(`HTTP/1.1 ${status} ${status === 431 ? 'Request Header Fields Too Large' : 'Bad Request'}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`)
}

/** Builds (but does not start) the gateway from a validated configuration. Everything per-route is compiled here. */
export async function buildGateway (config: GatewayConfig, deps: GatewayDeps = {}): Promise<Gateway> {
  const clock = deps.clock ?? Date.now
  const logger = deps.logger ?? defaultLogger(config.logging.level)
  const keys = buildKeySet(config.tokens.algorithm, config.tokens.keys)
  const signer = new TokenSigner(keys, { issuer: config.tokens.issuer, audience: config.tokens.audience, accessTokenTtlSec: config.tokens.accessTokenTtlSec, clock })
  const verifier = new TokenVerifier(keys, config)
  const denylist = deps.denylist ?? new Denylist()
  const rewriter = new HeaderRewriter(config)
  const readiness: Array<() => string | undefined> = []

  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }), // replaced by one decision line per request
    // no child logger per request (it costs on every request); lines that need the id log it
    childLoggerFactory: (parent) => parent,
    requestIdHeader: false,
    genReqId: (req) => HeaderRewriter.requestId(req.headers['x-request-id'], randomUUID),
    trustProxy: config.server.trustProxy as boolean | string[],
    requestTimeout: config.server.requestTimeoutMs,
    keepAliveTimeout: config.server.keepAliveTimeoutMs,
    bodyLimit: config.server.bodyLimitBytes,
    // matching ignores case so /API/Admin cannot slip past a guard on /api/admin
    routerOptions: { caseSensitive: false, ignoreTrailingSlash: false, ignoreDuplicateSlashes: false },
    return503OnClosing: true,
    // errors raised before routing (an undecodable URL) get the same JSON shape as ours
    frameworkErrors: (err, _request, reply) => { sendError(reply, toGatewayError(err), config.server.realm) },
    clientErrorHandler: writeClientError,
  })
  await app.register(errorsPlugin, { realm: config.server.realm })
  await app.register(authPlugin, { verifier, denylist, clock })
  if (config.logging.decisions) await app.register(accessLogPlugin, { logger })
  await app.register(jwksPlugin, { keys })
  await app.register(proxyPlugin, { config, rewriter })
  const sessions = deps.store === undefined ? undefined : await wireSessions(deps.store)

  const admin = Fastify({ loggerInstance: logger.child({ listener: 'admin' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) })
  await admin.register(errorsPlugin, { realm: config.server.realm })
  await admin.register(healthPlugin, {
    notReady: () => readiness.map(check => check()).filter((r): r is string => r !== undefined),
  })
  await admin.register(metricsPlugin, { gateway: app, denylist, verifier, ready: () => readiness.every(check => check() === undefined) })
  if (sessions !== undefined && config.admin.token !== '') {
    await admin.register(adminApiPlugin, { token: config.admin.token, service: sessions.service, store: sessions.store })
  }

  /** login/refresh/logout on the public listener, revocations followed from the store */
  async function wireSessions (store: Store): Promise<NonNullable<Gateway['sessions']>> {
    const t = config.tokens
    const service = new SessionService({
      store,
      clock,
      signAccessToken: (input) => signer.sign(input),
      throttle: new LoginThrottle({ clock }),
      options: {
        refreshTokenTtlSec: t.refreshTokenTtlSec,
        sessionMaxAgeSec: t.sessionMaxAgeSec,
        reuseGraceSec: t.refresh.reuseGraceSec,
        accessTokenTtlSec: t.accessTokenTtlSec,
        clockSkewSec: t.clockSkewSec,
      },
    })
    const feed = new RevocationFeed({ store, denylist, clock, logger })
    // the denylist is complete before the first request is served (fail closed)
    await feed.start()
    readiness.push(() => feed.ready ? undefined : `revocation feed ${feed.status.state}${feed.status.lastError === undefined ? '' : `: ${feed.status.lastError}`}`)
    await app.register(sessionsPlugin, { config, service, verifier, clock })
    // expired refresh tokens, sessions and revocations leave the database; idempotent, so
    // every replica may run it
    const purge = setInterval(() => {
      store.purgeExpired(new Date(clock())).catch((err: unknown) => logger.warn({ err: String(err) }, 'purge of expired sessions failed'))
    }, PURGE_INTERVAL_MS)
    purge.unref()
    app.addHook('onClose', async () => { clearInterval(purge) })
    return { service, feed, store }
  }

  return {
    config,
    app,
    admin,
    keys,
    signer,
    verifier,
    denylist,
    logger,
    readiness,
    sessions,
    close: async () => {
      await Promise.allSettled([app.close(), admin.close()])
      if (sessions !== undefined) {
        await sessions.feed.close()
        await sessions.store.close()
      }
    },
  }
}
