/** The validated, normalized, frozen configuration. Read nowhere but through this type. */

export const ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'PS256', 'HS256'] as const
export type Algorithm = typeof ALGORITHMS[number]

export type AuthMode = 'required' | 'optional' | 'public'

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

export interface RouteConfig {
  name: string
  prefix: string
  upstream: string
  /** origin of the upstream: scheme://host:port */
  upstreamOrigin: string
  rewritePrefix: string
  /** undefined: every method */
  methods: readonly string[] | undefined
  auth: AuthMode
  /** method (upper case) or '*' → requirement */
  scopes: Readonly<Record<string, ScopeRequirement>>
  timeoutMs: number
  connections: number
  websocket: boolean
  allowShadow: boolean
}

export interface GatewayConfig {
  /** where it was read from, for messages */
  source: string
  server: {
    host: string
    port: number
    trustProxy: boolean | readonly string[]
    realm: string
    requestTimeoutMs: number
    keepAliveTimeoutMs: number
    shutdownTimeoutMs: number
    bodyLimitBytes: number
  }
  admin: { host: string, port: number, token: string }
  database: { url: string, dataDir: string, poolSize: number }
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
  identity: {
    /** claim → lower-case header name */
    headers: Readonly<Record<string, string>>
    claimsHeader: string
    reservedPrefix: string
    forwardAuthorization: boolean
    forwardRefreshCookie: boolean
  }
  logging: { level: string, decisions: boolean }
  routes: readonly RouteConfig[]
}
