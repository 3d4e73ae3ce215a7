import type { Logger } from 'pino'
import type { GatewayConfig, IssuerConfig, RouteConfig } from './config/types.js'
import { buildKeySet, type KeySet } from './tokens/keys.js'
import { TokenSigner } from './tokens/signer.js'
import { TokenVerifier } from './tokens/verifier.js'
import { SelfIssuer } from './tokens/self-issuer.js'
import { ExternalIssuer } from './tokens/external-issuer.js'
import { RemoteKeySet } from './tokens/issuers/remote-key-set.js'
import { keySetOptionsFor } from './tokens/issuers/options.js'
import { AssertionSigner } from './tokens/assertion.js'
import { compilePolicy, type RoutePolicy } from './pipeline/authorize.js'
import type { Authenticator } from './pipeline/authenticate.js'
import { CorsPolicy } from './pipeline/cors.js'
import { HeaderRewriter } from './pipeline/headers.js'
import { RouteTable } from './pipeline/route-table.js'
import type { TrustFunction } from './pipeline/trust.js'
import type { Denylist } from './pipeline/denylist.js'
import { PoolRegistry, type UpstreamPool } from './proxy/pools.js'
import { UpstreamPath } from './proxy/upstream-path.js'
import { compileCookieRule } from './proxy/upstream-cookies.js'
import { BodyBudget, type HeldBodyBytes } from './proxy/body-budget.js'
import type { UpstreamTarget, UpstreamTiming } from './proxy/exchange.js'
import { webSocketServer, type WebSocketTarget } from './proxy/websocket.js'
import type { LiveSockets } from './proxy/live-sockets.js'
import type { LifetimeHistory } from './tokens/lifetimes.js'

/**
 * Everything the request path reads that comes from gateway.yaml, compiled once: the route
 * table with each route's policy and upstream, the verifier (own keys and identity
 * providers), the header rewriter, CORS, the signer and the JWKS. A reload compiles a new
 * Runtime and swaps it in one assignment; a request takes the Runtime current when it
 * arrives and finishes on it (reload.ts).
 */
export interface Runtime {
  readonly config: GatewayConfig
  readonly routes: RouteTable<CompiledRoute>
  readonly verifier: TokenVerifier
  /** the authenticate stage's verifier and denylist (proxied routes and auth endpoints alike) */
  readonly authenticator: Authenticator
  readonly rewriter: HeaderRewriter
  readonly cors: CorsPolicy | undefined
  readonly keys: KeySet
  readonly signer: TokenSigner
  readonly assertions: AssertionSigner | undefined
  readonly issuers: readonly ExternalIssuer[]
  /** the JWKS document served at /.well-known/jwks.json, serialized once */
  readonly jwksBody: string
  /** the upstream pools the routes use (the registry closes the others) */
  readonly pools: ReadonlySet<UpstreamPool>
  /** this configuration's place in the order of configurations (LiveSockets.configured) */
  readonly generation: number
}

/** the Runtime in force: read once per request, replaced whole by a reload */
export interface RuntimeHolder {
  current: Runtime
}

/** a route as the request path uses it */
export interface CompiledRoute {
  readonly name: string
  readonly config: RouteConfig
  readonly policy: RoutePolicy
  readonly upstream: UpstreamTarget | WebSocketTarget
  /** answer CORS (the gateway has a cors section and the route did not opt out) */
  readonly cors: boolean
}

/** What outlives a configuration: connections, key caches, revocations, open sockets. */
export interface Shared {
  pools: PoolRegistry
  keySets: KeySetRegistry
  denylist: Denylist
  live: LiveSockets
  trust: TrustFunction
  clock: () => number
  logger: Logger
  /** the upstream calls' figures (the metrics); undefined: not measured (explain) */
  timing?: UpstreamTiming | undefined
  /** the bytes of request bodies being read whole in this process; undefined: this configuration's alone (explain) */
  bodyBytes?: HeldBodyBytes | undefined
  /** the own tokens' lifetime limits of earlier configurations; undefined: this one's alone (explain) */
  lifetimes?: LifetimeHistory | undefined
}

export function compileRuntime (config: GatewayConfig, shared: Shared): Runtime {
  const keys = buildKeySet(config.tokens.algorithm, config.tokens.keys)
  const signer = new TokenSigner(keys, { issuer: config.tokens.issuer, audience: config.tokens.audience, accessTokenTtlSec: config.tokens.accessTokenTtlSec, clock: shared.clock })
  const issuers = config.issuers.map(i => new ExternalIssuer(i, shared.keySets.get(i, shared)))
  const verifier = new TokenVerifier(new SelfIssuer(keys, config.tokens, shared.lifetimes), issuers, config)
  const rewriter = new HeaderRewriter(config, shared.trust)
  const refreshCookie = config.identity.forwardRefreshCookie ? undefined : config.tokens.refresh.cookieName.toLowerCase()
  const routes = new RouteTable<CompiledRoute>()
  const pools = new Set<UpstreamPool>()
  // the limit on the bodies this configuration's routes read whole, on the process's count (proxy/body-budget.ts)
  const bodies = new BodyBudget(config.server.requestBufferBytes, shared.bodyBytes)
  for (const route of config.routes) {
    const pool = shared.pools.get(route.upstreamOrigin, route.connections)
    pools.add(pool)
    const path = new UpstreamPath(route.prefix, route.rewritePrefix)
    const target: UpstreamTarget = {
      route: route.name,
      origin: route.upstreamOrigin,
      pool,
      path,
      timeoutMs: route.timeoutMs,
      idleTimeoutMs: route.idleTimeoutMs,
      queueLimit: route.queueLimit,
      maxBodyBytes: route.maxBodyBytes,
      bodyBudget: route.requestBuffering ? bodies : undefined,
      upstreamHost: route.preserveHost ? undefined : route.upstreamHost,
      writeTimeoutMs: config.server.writeTimeoutMs,
      rewriter,
      responseRules: { refreshCookie, sandbox: route.sandbox, cookies: compileCookieRule(route.cookies, route.prefix, path) },
      timing: shared.timing,
    }
    const upstream: UpstreamTarget | WebSocketTarget = route.websocket
      ? { ...target, wsOrigin: route.upstreamOrigin.replace(/^http/, 'ws'), server: webSocketServer(route.maxBodyBytes), live: shared.live }
      : target
    routes.add(route.prefix, { name: route.name, config: route, policy: compilePolicy(route), upstream, cors: config.cors !== undefined && route.cors })
  }
  return {
    config,
    routes,
    verifier,
    authenticator: { verify: (token, nowMs) => verifier.verify(token, nowMs), denylist: shared.denylist },
    rewriter,
    cors: config.cors === undefined ? undefined : new CorsPolicy(config.cors),
    keys,
    signer,
    assertions: config.identity.assertion === undefined
      ? undefined
      : new AssertionSigner(keys, config.tokens.issuer, config.identity.assertion.lifetimeSec, shared.clock, {
        // the assertion shares the identity headers' budget (a token with 500 groups)
        maxBytes: config.identity.maxHeaderBytes - config.identity.assertion.header.length,
        maxTokens: Math.max(1000, config.tokens.verifyCacheSize),
      }),
    issuers,
    jwksBody: JSON.stringify(keys.jwks),
    pools,
    generation: shared.live.configured(),
  }
}

/**
 * One RemoteKeySet per key source per process — where an identity provider's keys come from:
 * its issuer, discovery or jwksUri, and allowInsecureHttp. A reload that keeps the source
 * keeps the set and its keys, and reconfigures it with the new settings (algorithms, jwks.*,
 * the name): a reload never refetches keys it already has, nor drops them
 * (fix-reload-drops-issuer-keys). Requests still on the old Runtime share the set; new
 * `algorithms` apply to them as well, at once. Sets no configuration uses any more are
 * closed once the new configuration is in (`retain`). `onWithdrawn` runs whenever a set
 * withdraws keys (their handles already dead): the gateway closes the WebSockets opened with
 * tokens they signed (LiveSockets.recheck).
 */
export class KeySetRegistry {
  readonly #sets = new Map<string, RemoteKeySet>()
  /** false: key sets are built but never fetch (`portcullis explain` works without network) */
  readonly #fetch: boolean
  readonly #onWithdrawn: () => void

  constructor (options: { fetch?: boolean, onWithdrawn?: () => void } = {}) {
    this.#fetch = options.fetch ?? true
    this.#onWithdrawn = options.onWithdrawn ?? (() => {})
  }

  get (issuer: IssuerConfig, shared: Pick<Shared, 'logger'>): RemoteKeySet {
    const source = JSON.stringify([issuer.issuer, issuer.discovery, issuer.jwksUri ?? null, issuer.allowInsecureHttp])
    // the set names its issuer in every line itself
    const options = keySetOptionsFor(issuer, { logger: shared.logger })
    const existing = this.#sets.get(source)
    if (existing !== undefined) {
      existing.reconfigure(options)
      return existing
    }
    const set = new RemoteKeySet(options)
    set.onChange((change) => { if (change.removed.length > 0) this.#onWithdrawn() })
    if (this.#fetch) set.start()
    this.#sets.set(source, set)
    return set
  }

  /** closes the key sets the current configuration does not use */
  retain (used: ReadonlySet<RemoteKeySet>): void {
    for (const [key, set] of this.#sets) {
      if (used.has(set)) continue
      set.close()
      this.#sets.delete(key)
    }
  }

  close (): void {
    for (const set of this.#sets.values()) set.close()
    this.#sets.clear()
  }
}
