/**
 * The gateway.yaml schema: every setting, its default and what it affects, in one place.
 * Written with TypeBox so the raw configuration type (`RawConfig`, after defaults) is
 * derived from it and cannot drift; validated with Ajv (`additionalProperties: false`
 * everywhere, defaults applied) after `${VAR}` / `${VAR:-default}` placeholders are
 * resolved and before the semantic checks in src/config/checks/.
 *
 * Durations are strings with a unit (`500ms`, `30s`, `10m`, `12h`, `14d`) or a number of
 * seconds; the normalized configuration (src/config/types.ts) carries them as `…Ms`/`…Sec`.
 */
import Type, { type Static, type TSchema } from 'typebox'

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const
/** algorithms the gateway signs its own tokens with */
export const ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'PS256', 'HS256'] as const
/** algorithms an external issuer may use: asymmetric only, HS* never comes from a JWKS */
export const ISSUER_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const
/** the name routes use for the gateway's own tokens (`tokens:`) in `routes[].issuers` */
export const SELF_ISSUER = 'self'

export const DURATION_PATTERN = '^[0-9]+(ms|s|m|h|d)$'
/**
 * Every duration is finite and has a maximum, checked with the schema (the `maxDuration`
 * keyword, src/config/load.ts) so that `check` and `start` agree (fix-duration-overflow).
 * A Node timer waits at most 2^31 − 1 ms (~24.8 days) and fires after 1 ms beyond it: a route
 * timeout of 30d answered every request 504 within 3 ms, a reconcile interval of 30d reloaded
 * the denylist every millisecond. Durations that only enter date arithmetic (session and
 * refresh lifetimes, an IdP's token lifetime, login lockouts) may be longer, not endless:
 * 999999999d made every login a 500 (a Date past ±8.64e15 ms is invalid).
 */
const MAX_TIMER_DURATION = '24d'
const MAX_LIFETIME_DURATION = '3650d'
function Duration (defaultValue?: string, maxDuration: string = MAX_TIMER_DURATION) {
  return Type.Union([Type.String({ pattern: DURATION_PATTERN }), Type.Number({ minimum: 0 })], {
    description: 'a duration such as 500ms, 30s, 10m, 12h, 14d (or a number of seconds)',
    maxDuration,
    ...(defaultValue === undefined ? {} : { default: defaultValue }),
  })
}
const HeaderName = Type.String({ pattern: '^[A-Za-z0-9-]+$', minLength: 1, maxLength: 100 })
const ScopeName = Type.String({ pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$' }) // RFC 6749 §3.3 scope-token
const ScopeList = Type.Array(ScopeName, { uniqueItems: true })
const ScopeRule = Type.Union([
  ScopeList, // all of these
  Type.Object({ anyOf: Type.Array(ScopeName, { uniqueItems: true, minItems: 1 }) }, { additionalProperties: false }),
], { description: 'a list of scopes (all required) or { anyOf: [scopes] }' })
const Origin = Type.String({ pattern: '^https?://[^/]+$' })
const Name = Type.String({ pattern: '^[A-Za-z0-9_.-]{1,64}$' })
const Obj = <T extends Record<string, TSchema>>(properties: T, options: { default?: unknown, description?: string } = {}) =>
  Type.Object(properties, { additionalProperties: false, ...options })

export const KID_PATTERN = '^[A-Za-z0-9._-]{1,64}$'
const KeyEntry = Obj({
  kid: Type.String({ pattern: KID_PATTERN }),
  privateKeyFile: Type.Optional(Type.String({ minLength: 1 })),
  privateKey: Type.Optional(Type.String({ minLength: 1 })), // PEM text, e.g. ${JWT_PRIVATE_KEY}
  publicKeyFile: Type.Optional(Type.String({ minLength: 1 })), // verify-only key (rotation out)
  publicKey: Type.Optional(Type.String({ minLength: 1 })),
  // HS256 only: a file holding the secret (what `keys generate --alg HS256` writes), or the
  // secret itself; ≥ 32 bytes (checks/tokens.ts)
  secretFile: Type.Optional(Type.String({ minLength: 1 })),
  secret: Type.Optional(Type.String()),
})

const Server = Obj({
  host: Type.String({ default: '0.0.0.0' }),
  port: Type.Integer({ minimum: 0, maximum: 65_535, default: 8080 }),
  // false: x-forwarded-* from clients are replaced; true: trust every hop (only behind a
  // load balancer that overwrites them); a list: trust these proxy addresses/CIDRs only.
  // The one client address (login throttle, x-forwarded-for, CSRF same-origin) follows it.
  trustProxy: Type.Union([Type.Boolean(), Type.Array(Type.String())], { description: 'true, false or a list of proxy addresses/CIDRs', default: false }),
  // realm in WWW-Authenticate (RFC 6750 §3)
  realm: Type.String({ pattern: '^[^"\\\\\\r\\n]*$', default: 'portcullis' }),
  // how long a client may take to send a whole request
  requestTimeout: Duration('30s'),
  // idle keep-alive of client connections
  keepAliveTimeout: Duration('72s'),
  // on SIGTERM: how long in-flight requests may take before the process exits anyway
  shutdownTimeout: Duration('10s'),
  // size cap for bodies the gateway itself parses (auth endpoints); proxied bodies: routes[].maxBodyBytes
  bodyLimitBytes: Type.Integer({ minimum: 1024, default: 65_536 }),
  // a client that stops reading its response for this long is disconnected (and its
  // upstream request aborted), so it cannot hold an upstream connection
  writeTimeout: Duration('30s'),
  // bytes of request bodies a process may hold while it reads them whole before forwarding
  // (routes[].requestBuffering); a body that would pass it → 503 gateway_busy
  requestBufferBytes: Type.Integer({ minimum: 65_536, maximum: 1_099_511_627_776, default: 134_217_728 }),
  // processes sharing the public port: `auto` = one per core; 1 = a single process
  workers: Type.Union([Type.Literal('auto'), Type.Integer({ minimum: 1, maximum: 256 })], { description: '"auto" or a number of processes', default: 1 }),
  // HTTPS on the public listener; absent: plain HTTP (terminate TLS in front)
  tls: Type.Optional(Obj({
    certFile: Type.String({ minLength: 1 }), // PEM, leaf first, then the chain
    keyFile: Type.String({ minLength: 1 }),
    caFile: Type.Optional(Type.String({ minLength: 1 })), // extra chain certificates
    minVersion: Type.Union([Type.Literal('TLSv1.2'), Type.Literal('TLSv1.3')], { default: 'TLSv1.2' }),
  })),
  // HTTP/2 on the public listener (needs tls; HTTP/1.1 stays offered by ALPN)
  http2: Type.Boolean({ default: false }),
}, { default: {} })

const Admin = Obj({
  host: Type.String({ default: '127.0.0.1' }),
  port: Type.Integer({ minimum: 0, maximum: 65_535, default: 9090 }),
  // bearer token for the admin API (≥ 32 characters); empty disables the admin API (health/metrics stay up)
  token: Type.String({ default: '' }),
  // host names (no port) the admin listener answers besides IP literals and localhost: a
  // DNS-rebinding page reaches it under its own name (plugins/admin-host.ts)
  allowedHosts: Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { default: [] }),
}, { default: {} })

const Database = Obj({
  // postgres:// or postgresql:// URL; empty → the embedded store (PGlite) under dataDir.
  // Checked in checks/server.ts, not by a pattern: it holds a password, never quoted in a problem
  url: Type.String({ default: '' }),
  dataDir: Type.String({ default: './data' }),
  poolSize: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
  // the revocation feed's LISTEN connection, when url goes through a pooler in transaction
  // mode (which breaks LISTEN); empty: url
  listenUrl: Type.String({ default: '' }),
  // longest a statement may run (PostgreSQL statement_timeout): a stuck query fails as 503, never hangs
  statementTimeout: Duration('5s'),
  // longest a statement waits for a row lock (lock_timeout), e.g. behind a stuck refresh
  lockTimeout: Duration('2s'),
}, { default: {} })

const Tokens = Obj({
  issuer: Type.String({ minLength: 1 }),
  audience: Type.String({ minLength: 1 }),
  algorithm: Type.String(), // checked in checks so `none` gets a precise message
  keys: Type.Array(KeyEntry),
  accessTokenTtl: Duration('10m'),
  // longest exp − iat accepted on verification (≤ 1h); default: accessTokenTtl
  maxTokenLifetime: Type.Optional(Duration()),
  refreshTokenTtl: Duration('14d', MAX_LIFETIME_DURATION),
  sessionMaxAge: Duration('30d', MAX_LIFETIME_DURATION),
  // tolerance for exp/nbf/iat between machines' clocks (max 5m)
  clockSkew: Duration('30s'),
  // longest accepted Authorization token; longer → 401 before any parsing
  maxTokenBytes: Type.Integer({ minimum: 256, maximum: 65_536, default: 8192 }),
  // verified tokens remembered until their exp, from their second use (0 disables); each entry ~1 KiB
  verifyCacheSize: Type.Integer({ minimum: 0, maximum: 10_000_000, default: 20_000 }),
  refresh: Obj({
    transport: Type.Union([Type.Literal('cookie'), Type.Literal('body'), Type.Literal('both')], { default: 'cookie' }),
    cookieName: Type.String({ pattern: '^[A-Za-z0-9_.-]+$', default: '__Host-portcullis-rt' }),
    // a spent refresh token presented again within this window gets the same successor
    reuseGrace: Duration('10s'),
  }, { default: {} }),
  // origins allowed to call the cookie-carried auth endpoints (CSRF)
  allowedOrigins: Type.Array(Origin, { default: [] }),
})

const Issuer = Obj({
  // used in routes[].issuers, logs and metrics; `self` is the gateway's own tokens
  name: Name,
  // the exact `iss` of its tokens; the issuer of a token is chosen by this, nothing else
  issuer: Type.String({ minLength: 1 }),
  // {issuer}/.well-known/openid-configuration → jwks_uri (its `issuer` must equal ours)
  discovery: Type.Boolean({ default: false }),
  // instead of discovery
  jwksUri: Type.Optional(Type.String({ minLength: 1 })),
  // `aud` (string or array) must contain one of these
  audiences: Type.Array(Type.String({ minLength: 1 }), { minItems: 1 }),
  // pinned; asymmetric only
  algorithms: Type.Array(Type.Union(ISSUER_ALGORITHMS.map(a => Type.Literal(a))), { minItems: 1, uniqueItems: true, default: ['RS256'] }),
  // accepted `typ` header values; RFC 9068 says at+jwt, several IdPs send JWT (opt in)
  typ: Type.Array(Type.String({ minLength: 1 }), { minItems: 1, default: ['at+jwt'] }),
  // where scopes live: `scope` (space-separated string), `scp` (array) or a path such as [realm_access, roles]
  scopeClaim: Type.Union([Type.String({ minLength: 1 }), Type.Array(Type.String({ minLength: 1 }), { minItems: 1, maxItems: 8 })], { default: 'scope' }),
  clockSkew: Duration('30s'),
  // longest exp − iat accepted (IdPs differ: Keycloak 5m, Entra ~1h, Auth0 24h)
  maxTokenLifetime: Duration('24h', MAX_LIFETIME_DURATION),
  // claims a token must carry besides exp and iss (jti is needed to revoke one token)
  requiredClaims: Type.Array(Type.String({ minLength: 1 }), { default: ['sub', 'iat'] }),
  // fetching and caching the issuer's keys
  jwks: Obj({
    // each fetch as a whole (connect, headers, body)
    fetchTimeout: Duration('5s'),
    // a real JWKS is 1–20 KiB (Entra ID with x5c chains ~15 KiB), a discovery document 2–6 KiB
    maxBytes: Type.Integer({ minimum: 1024, maximum: 10_485_760, default: 262_144 }),
    // background refresh when the answer has no Cache-Control max-age; a key the IdP withdrew
    // keeps verifying at most ~0.8 × this
    refreshInterval: Duration('10m'),
    // Cache-Control max-age is honoured within [minRefreshInterval, maxRefreshInterval];
    // minRefreshInterval is also the retry interval while fetches fail
    minRefreshInterval: Duration('30s'),
    maxRefreshInterval: Duration('1h'),
    // at most one fetch per cooldown for tokens with an unknown kid (a flood of kids costs one)
    cooldown: Duration('30s'),
    // keys stay in use this long past their freshness while refreshes fail (IdP outage vs
    // how long a withdrawn key could verify)
    staleIfError: Duration('12h'),
    maxKeys: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }),
  }, { default: {} }),
})

const HeaderMapping = Obj({
  // one claim name (dots and slashes literal) …
  claim: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
  // … or a path into nested claims
  path: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { minItems: 1, maxItems: 8 })),
  header: HeaderName,
})

const Identity = Obj({
  // claim → header set on the upstream request; a map, or a list of {claim | path, header}
  headers: Type.Union([Type.Record(Type.String(), HeaderName), Type.Array(HeaderMapping)], {
    description: 'a map of claim → header, or a list of { claim | path, header }',
    default: { sub: 'x-user-id', scope: 'x-user-scopes' },
  }),
  // header with every claim as base64url(JSON); empty → not sent
  claimsHeader: Type.Union([HeaderName, Type.Literal('')], { description: 'a header name or empty', default: '' }),
  // every inbound header starting with this (any case, `_` for `-`) is dropped
  reservedPrefix: Type.String({ pattern: '^[A-Za-z0-9-]+$', minLength: 2, default: 'x-user-' }),
  // budget for all identity headers of one request together (a token with 500 groups must
  // not produce a request the upstream refuses): over it, the largest values are replaced by
  // a marker and `x-portcullis-identity-truncated` names them
  maxHeaderBytes: Type.Integer({ minimum: 256, maximum: 65_536, default: 8192 }),
  forwardAuthorization: Type.Boolean({ default: false }),
  forwardRefreshCookie: Type.Boolean({ default: false }),
  // a signed JWT with the verified claims, `aud` = the route's upstream, for routes that ask for it
  assertion: Type.Optional(Obj({
    header: HeaderName, // e.g. x-portcullis-assertion
    lifetime: Duration('5m'),
  })),
}, { default: {} })

const Login = Obj({
  // counted in the store, so every replica and worker shares them
  throttle: Obj({
    // failed attempts per account per window before it is locked
    perAccount: Type.Integer({ minimum: 1, maximum: 10_000, default: 5 }),
    // failed attempts per client address (/64 for IPv6) per window
    perIp: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 50 }),
    // all attempts, successful ones included, per client address per window (credential stuffing)
    perIpTotal: Type.Integer({ minimum: 1, maximum: 1_000_000, default: 300 }),
    window: Duration('15m', MAX_LIFETIME_DURATION),
    // first lockout; each further lockout within a window doubles it, up to maxLockout
    lockout: Duration('1m', MAX_LIFETIME_DURATION),
    maxLockout: Duration('1h', MAX_LIFETIME_DURATION),
    // rows kept at most (oldest pruned first)
    maxEntries: Type.Integer({ minimum: 1000, maximum: 10_000_000, default: 100_000 }),
  }, { default: {} }),
}, { default: {} })

const Revocation = Obj({
  // 0: keep serving with the last denylist while the store is away (a missed revocation is
  // bounded by accessTokenTtl); > 0: /readyz answers 503 once the denylist is this stale
  maxStaleness: Duration('0s'),
  // a query on the LISTEN connection this often; no answer within the interval → reconnect and catch up
  heartbeatInterval: Duration('5s'),
  // the denylist is reloaded from the table this often even when notifications flow
  reconcileInterval: Duration('5m'),
}, { default: {} })

const Cors = Obj({
  // allowed origins (scheme://host[:port]) or "*" (never with credentials)
  origins: Type.Array(Type.Union([Origin, Type.Literal('*')]), { minItems: 1 }),
  credentials: Type.Boolean({ default: true }),
  maxAge: Duration('10m'),
  exposeHeaders: Type.Array(HeaderName, { default: ['x-request-id', 'www-authenticate', 'retry-after'] }),
  allowHeaders: Type.Array(HeaderName, { default: ['authorization', 'content-type', 'x-request-id'] }),
})

const Telemetry = Obj({
  // OTLP/HTTP trace export; absent → tracing off (and free)
  otlp: Type.Optional(Obj({
    endpoint: Type.String({ pattern: '^https?://' }), // base URL; /v1/traces is appended
    serviceName: Type.String({ default: 'portcullis' }),
    // share of new traces (requests without a valid traceparent) that are sampled; a client's
    // sampled flag is followed
    sampleRatio: Type.Number({ minimum: 0, maximum: 1, default: 1 }),
    timeout: Duration('10s'),
  })),
}, { default: {} })

const Logging = Obj({
  level: Type.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map(l => Type.Literal(l)), { default: 'info' }),
  // one line per request with the access decision
  decisions: Type.Boolean({ default: true }),
}, { default: {} })

const Route = Obj({
  name: Name,
  prefix: Type.String({ pattern: '^/([A-Za-z0-9._~!$&\'()+,=@-]+(/[A-Za-z0-9._~!$&\'()+,=@-]+)*)?$' }),
  upstream: Type.String({ minLength: 1 }),
  // path on the upstream that replaces the prefix; default: the prefix itself (path unchanged)
  rewritePrefix: Type.Optional(Type.String({ pattern: '^/' })),
  methods: Type.Optional(Type.Array(Type.Union(HTTP_METHODS.map(m => Type.Literal(m))), { minItems: 1, uniqueItems: true })),
  auth: Type.Union([Type.Literal('required'), Type.Literal('optional'), Type.Literal('public')]),
  // per method; every method the route allows must be covered ("*" covers the rest)
  scopes: Type.Optional(Obj(Object.fromEntries(['*', ...HTTP_METHODS].map(m => [m, Type.Optional(ScopeRule)])) as Record<string, TSchema>)),
  // issuers whose tokens this route accepts (`self` = tokens:); default: every configured issuer
  issuers: Type.Optional(Type.Array(Name, { minItems: 1, uniqueItems: true })),
  // time from accepting the request to the upstream's response headers, before 504
  timeout: Duration('30s'),
  // longest gap between two body chunks of the upstream's response (SSE, long polls); ~1 s resolution
  idleTimeout: Duration('5m'),
  // requests waiting for a connection to this route's upstream; beyond → 503 upstream_busy
  queueLimit: Type.Integer({ minimum: 0, maximum: 1_000_000, default: 1000 }),
  // keep-alive connections per upstream pool
  connections: Type.Integer({ minimum: 1, maximum: 10_000, default: 128 }),
  // request body cap, counted on the stream (chunked or not); over it → 413
  maxBodyBytes: Type.Integer({ minimum: 0, maximum: 1_099_511_627_776, default: 10_485_760 }),
  // read the whole request body before taking an upstream connection, so a client that sends
  // slowly holds no upstream connection; false: stream it as it arrives (large uploads)
  requestBuffering: Type.Boolean({ default: true }),
  // send the client's Host upstream instead of the upstream's own
  preserveHost: Type.Boolean({ default: false }),
  // the route's answers carry `Content-Security-Policy: sandbox`: a page an upstream serves on
  // the gateway's origin runs in an opaque origin, never as the gateway's own (it could call
  // the cookie-carried auth endpoints); false for a route that serves the app's own pages
  sandbox: Type.Boolean({ default: true }),
  // what the upstream's Set-Cookie may do on the gateway's origin: `route` keeps each cookie
  // under this route's prefix and host-only (another route's upstream and the auth endpoints
  // never receive it), `pass` leaves it as sent, `drop` removes it (src/proxy/upstream-cookies.ts)
  cookies: Type.Union([Type.Literal('route'), Type.Literal('pass'), Type.Literal('drop')], { default: 'route' }),
  websocket: Type.Boolean({ default: false }),
  // answer CORS for this route (when `cors:` is configured); false: the upstream answers CORS
  // itself — no CORS headers from the gateway, preflights go through the route's policy
  cors: Type.Boolean({ default: true }),
  // send a signed assertion (identity.assertion) with aud = this
  assertion: Type.Optional(Obj({ audience: Type.String({ minLength: 1 }) })),
  // a public route nested under a protected prefix is refused unless acknowledged here
  allowShadow: Type.Boolean({ default: false }),
})

export const configSchema = Obj({
  server: Server,
  admin: Admin,
  database: Database,
  tokens: Tokens,
  issuers: Type.Array(Issuer, { default: [] }),
  identity: Identity,
  login: Login,
  revocation: Revocation,
  cors: Type.Optional(Cors),
  telemetry: Telemetry,
  logging: Logging,
  routes: Type.Array(Route, { minItems: 1 }),
})

/** the configuration as validated, defaults applied, before normalization (src/config/types.ts) */
export type RawConfig = Static<typeof configSchema>
export type RawRoute = Static<typeof Route>
export type RawIssuer = Static<typeof Issuer>
