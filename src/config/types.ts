/**
 * The validated, normalized, frozen configuration: what the rest of the gateway reads
 * (and nothing else). The raw shape comes from the schema (config/schema.ts, `RawConfig`);
 * this is what src/config/normalize.ts makes of it: durations in `…Ms`/`…Sec`, key files
 * read, origins resolved, identity mappings as paths. Parts that normalization leaves as
 * they are reuse the raw types, so the two cannot drift.
 */
import type { RawConfig } from '../../config/schema.js'
import { ALGORITHMS, HTTP_METHODS, ISSUER_ALGORITHMS, SELF_ISSUER } from '../../config/schema.js'

/** routes[].cookies: what the upstream's Set-Cookie may do (src/proxy/upstream-cookies.ts) */
export type CookiePolicy = NonNullable<RawConfig['routes'][number]['cookies']>

export { ALGORITHMS, HTTP_METHODS, ISSUER_ALGORITHMS, SELF_ISSUER }
export type Algorithm = typeof ALGORITHMS[number]
export type IssuerAlgorithm = typeof ISSUER_ALGORITHMS[number]
export type HttpMethod = typeof HTTP_METHODS[number]

export type AuthMode = RawConfig['routes'][number]['auth']

/** scopes a method needs: every one of `allOf`, and at least one of `anyOf` when non-empty */
export interface ScopeRequirement {
  allOf: readonly string[]
  anyOf: readonly string[]
}

export interface KeyConfig {
  kid: string
  privateKeyPem?: string
  publicKeyPem?: string
  secret?: string
}

/** one claim → header mapping; `path` walks nested claims, one key per element */
export interface IdentityMapping {
  path: readonly string[]
  /** lower case */
  header: string
}

export interface RouteConfig {
  name: string
  prefix: string
  upstream: string
  /** origin of the upstream: scheme://host:port */
  upstreamOrigin: string
  /** the Host the upstream expects (its origin's host:port) */
  upstreamHost: string
  rewritePrefix: string
  /** undefined: every method */
  methods: readonly HttpMethod[] | undefined
  auth: AuthMode
  /** method (upper case) or '*' → requirement */
  scopes: Readonly<Record<string, ScopeRequirement>>
  /** names of the issuers whose tokens this route accepts (`self` included by name) */
  issuers: readonly string[]
  /** from accepting the request to the upstream's response headers */
  timeoutMs: number
  /** longest gap between upstream body chunks */
  idleTimeoutMs: number
  queueLimit: number
  connections: number
  maxBodyBytes: number
  /** the body is read whole before the request takes an upstream connection */
  requestBuffering: boolean
  preserveHost: boolean
  /** answers carry `Content-Security-Policy: sandbox` (pages the upstream serves get an opaque origin) */
  sandbox: boolean
  /** what the upstream's Set-Cookie may do: `route` scopes it to the prefix, `pass`, `drop` */
  cookies: CookiePolicy
  websocket: boolean
  /** CORS answered on this route (when `cors` is configured globally) */
  cors: boolean
  /** the assertion's `aud`, when the route sends one */
  assertionAudience: string | undefined
  allowShadow: boolean
}

export interface IssuerConfig {
  name: string
  issuer: string
  discovery: boolean
  jwksUri: string | undefined
  audiences: readonly string[]
  algorithms: readonly IssuerAlgorithm[]
  typ: readonly string[]
  /** path to the scopes: ['scope'], ['scp'], ['realm_access', 'roles'] */
  scopeClaim: readonly string[]
  clockSkewSec: number
  maxTokenLifetimeSec: number
  requiredClaims: readonly string[]
  /** plain http is allowed only for loopback addresses (tests, sidecars) */
  allowInsecureHttp: boolean
  jwks: {
    fetchTimeoutMs: number
    maxBytes: number
    refreshIntervalMs: number
    minRefreshIntervalMs: number
    maxRefreshIntervalMs: number
    cooldownMs: number
    staleIfErrorMs: number
    maxKeys: number
  }
}

export interface CorsConfig {
  /** normalized origins; `*` alone means any origin (never with credentials) */
  origins: readonly string[]
  anyOrigin: boolean
  credentials: boolean
  maxAgeSec: number
  exposeHeaders: readonly string[]
  allowHeaders: readonly string[]
}

export interface TlsConfig {
  certPem: string
  keyPem: string
  caPem: string | undefined
  minVersion: 'TLSv1.2' | 'TLSv1.3'
  /** the files, re-read on reload */
  files: { cert: string, key: string, ca: string | undefined }
}

export interface GatewayConfig {
  /** where it was read from, for messages */
  source: string
  /** sha256 of the file text, shown in /metrics and logs after a reload */
  hash: string
  server: {
    host: string
    port: number
    trustProxy: boolean | readonly string[]
    realm: string
    requestTimeoutMs: number
    keepAliveTimeoutMs: number
    shutdownTimeoutMs: number
    bodyLimitBytes: number
    writeTimeoutMs: number
    /** the most bytes of request bodies read whole (routes[].requestBuffering) a process holds */
    requestBufferBytes: number
    /** resolved: `auto` → the number of cores */
    workers: number
    tls: TlsConfig | undefined
    http2: boolean
  }
  admin: { host: string, port: number, token: string, allowedHosts: readonly string[] }
  database: { url: string, listenUrl: string, dataDir: string, poolSize: number, statementTimeoutMs: number, lockTimeoutMs: number }
  tokens: {
    issuer: string
    audience: string
    algorithm: Algorithm
    keys: readonly KeyConfig[]
    accessTokenTtlSec: number
    maxTokenLifetimeSec: number
    refreshTokenTtlSec: number
    sessionMaxAgeSec: number
    clockSkewSec: number
    maxTokenBytes: number
    verifyCacheSize: number
    refresh: { transport: 'cookie' | 'body' | 'both', cookieName: string, reuseGraceSec: number }
    allowedOrigins: readonly string[]
  }
  issuers: readonly IssuerConfig[]
  identity: {
    mappings: readonly IdentityMapping[]
    claimsHeader: string
    reservedPrefix: string
    maxHeaderBytes: number
    forwardAuthorization: boolean
    forwardRefreshCookie: boolean
    assertion: { header: string, lifetimeSec: number } | undefined
  }
  login: {
    throttle: {
      perAccount: number
      perIp: number
      perIpTotal: number
      windowSec: number
      lockoutSec: number
      maxLockoutSec: number
      maxEntries: number
    }
  }
  revocation: { maxStalenessMs: number, heartbeatIntervalMs: number, reconcileIntervalMs: number }
  cors: CorsConfig | undefined
  telemetry: { otlp: { endpoint: string, serviceName: string, sampleRatio: number, timeoutMs: number } | undefined }
  logging: RawConfig['logging']
  routes: readonly RouteConfig[]
}
