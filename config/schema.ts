/**
 * The gateway.yaml schema: every setting, its default and what it affects, in one place.
 * Durations are strings with a unit (`500ms`, `30s`, `10m`, `12h`, `14d`) or a number of seconds.
 * Validated with Ajv (`additionalProperties: false` everywhere, defaults applied), after
 * `${VAR}` / `${VAR:-default}` placeholders are resolved and before the semantic checks
 * in src/config/checks.ts.
 */

const duration = { description: 'a duration such as 500ms, 30s, 10m, 12h, 14d (or a number of seconds)', anyOf: [{ type: 'string', pattern: '^[0-9]+(ms|s|m|h|d)$' }, { type: 'number', minimum: 0 }] } as const
const headerName = { type: 'string', pattern: '^[A-Za-z0-9-]+$', minLength: 1, maxLength: 100 } as const
const scopeName = { type: 'string', pattern: '^[\\x21\\x23-\\x5B\\x5D-\\x7E]+$' } as const // RFC 6749 §3.3 scope-token
const scopeList = { type: 'array', items: scopeName, uniqueItems: true } as const
const scopeRule = {
  description: 'a list of scopes (all required) or { anyOf: [scopes] }',
  anyOf: [
    scopeList, // all of these
    { type: 'object', additionalProperties: false, required: ['anyOf'], properties: { anyOf: { ...scopeList, minItems: 1 } } },
  ],
} as const

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

export const configSchema = {
  type: 'object',
  additionalProperties: false,
  required: ['tokens', 'routes'],
  properties: {
    server: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', default: '0.0.0.0' },
        port: { type: 'integer', minimum: 0, maximum: 65_535, default: 8080 },
        // false: x-forwarded-* from clients are replaced; true: trust every hop (only behind a
        // load balancer that overwrites them); a list: trust these proxy addresses/CIDRs only.
        trustProxy: { description: 'true, false or a list of proxy addresses/CIDRs', anyOf: [{ type: 'boolean' }, { type: 'array', items: { type: 'string' } }], default: false },
        // realm in WWW-Authenticate (RFC 6750 §3)
        realm: { type: 'string', pattern: '^[^"\\\\\\r\\n]*$', default: 'portcullis' },
        // how long a client may take to send a whole request
        requestTimeout: { ...duration, default: '30s' },
        // idle keep-alive of client connections
        keepAliveTimeout: { ...duration, default: '72s' },
        // on SIGTERM: how long in-flight requests may take before the process exits anyway
        shutdownTimeout: { ...duration, default: '10s' },
        // size cap for bodies the gateway itself parses (auth endpoints); proxied bodies stream
        bodyLimitBytes: { type: 'integer', minimum: 1024, default: 65_536 },
      },
    },
    admin: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        host: { type: 'string', default: '127.0.0.1' },
        port: { type: 'integer', minimum: 0, maximum: 65_535, default: 9090 },
        // bearer token for the admin API; empty disables the admin API (health/metrics stay up)
        token: { type: 'string', default: '' },
      },
    },
    database: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        // postgres://…; empty → the embedded store (PGlite) under dataDir
        url: { type: 'string', default: '' },
        dataDir: { type: 'string', default: './data' },
        poolSize: { type: 'integer', minimum: 1, maximum: 200, default: 10 },
      },
    },
    tokens: {
      type: 'object',
      additionalProperties: false,
      required: ['issuer', 'audience', 'algorithm', 'keys'],
      properties: {
        issuer: { type: 'string', minLength: 1 },
        audience: { type: 'string', minLength: 1 },
        algorithm: { type: 'string' }, // checked in checks.ts so `none` gets a precise message
        keys: {
          type: 'array',
          items: {
            type: 'object',
            additionalProperties: false,
            required: ['kid'],
            properties: {
              kid: { type: 'string', pattern: '^[A-Za-z0-9._-]{1,64}$' },
              privateKeyFile: { type: 'string', minLength: 1 },
              privateKey: { type: 'string', minLength: 1 }, // PEM text, e.g. ${JWT_PRIVATE_KEY}
              publicKeyFile: { type: 'string', minLength: 1 }, // verify-only key (rotation out)
              publicKey: { type: 'string', minLength: 1 },
              secret: { type: 'string' }, // HS256 only, ≥ 32 bytes
            },
          },
        },
        accessTokenTtl: { ...duration, default: '10m' },
        // longest exp − iat accepted on verification; default: accessTokenTtl
        maxTokenLifetime: duration,
        refreshTokenTtl: { ...duration, default: '14d' },
        sessionMaxAge: { ...duration, default: '30d' },
        // tolerance for exp/nbf/iat between machines' clocks (max 5m)
        clockSkew: { ...duration, default: '30s' },
        // longest accepted Authorization token; longer → 401 before any parsing
        maxTokenBytes: { type: 'integer', minimum: 256, maximum: 65_536, default: 8192 },
        // verified tokens remembered until their exp, from their second use (0 disables); each entry ~1 KiB
        verifyCacheSize: { type: 'integer', minimum: 0, maximum: 10_000_000, default: 20_000 },
        refresh: {
          type: 'object',
          additionalProperties: false,
          default: {},
          properties: {
            transport: { enum: ['cookie', 'body', 'both'], default: 'cookie' },
            cookieName: { type: 'string', pattern: '^[A-Za-z0-9_.-]+$', default: '__Host-portcullis-rt' },
            // a spent refresh token presented again within this window gets the same successor
            reuseGrace: { ...duration, default: '10s' },
          },
        },
        // origins allowed to call the cookie-carried auth endpoints (CSRF)
        allowedOrigins: { type: 'array', items: { type: 'string', pattern: '^https?://[^/]+$' }, default: [] },
      },
    },
    identity: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        // claim → header set on the upstream request
        headers: {
          type: 'object',
          additionalProperties: headerName,
          default: { sub: 'x-user-id', scope: 'x-user-scopes' },
        },
        // header with every claim as base64url(JSON); empty → not sent
        claimsHeader: { description: 'a header name or empty', anyOf: [headerName, { const: '' }], default: '' },
        // every inbound header starting with this (any case, `_` for `-`) is dropped
        reservedPrefix: { type: 'string', pattern: '^[A-Za-z0-9-]+$', minLength: 2, default: 'x-user-' },
        forwardAuthorization: { type: 'boolean', default: false },
        forwardRefreshCookie: { type: 'boolean', default: false },
      },
    },
    logging: {
      type: 'object',
      additionalProperties: false,
      default: {},
      properties: {
        level: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'], default: 'info' },
        // one line per proxied request with the access decision
        decisions: { type: 'boolean', default: true },
      },
    },
    routes: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        additionalProperties: false,
        required: ['name', 'prefix', 'upstream', 'auth'],
        properties: {
          name: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
          prefix: { type: 'string', pattern: '^/([A-Za-z0-9._~!$&\'()*+,=:@-]+(/[A-Za-z0-9._~!$&\'()*+,=:@-]+)*)?$' },
          upstream: { type: 'string', minLength: 1 },
          // path on the upstream that replaces the prefix; default: the prefix itself (path unchanged)
          rewritePrefix: { type: 'string', pattern: '^/' },
          methods: { type: 'array', minItems: 1, uniqueItems: true, items: { enum: HTTP_METHODS } },
          auth: { enum: ['required', 'optional', 'public'] },
          scopes: {
            type: 'object',
            additionalProperties: false,
            default: {},
            properties: Object.fromEntries(['*', ...HTTP_METHODS].map(m => [m, scopeRule])),
          },
          // time for the upstream to answer (headers) before 504
          timeout: { ...duration, default: '30s' },
          // keep-alive connections per upstream pool
          connections: { type: 'integer', minimum: 1, maximum: 10_000, default: 128 },
          websocket: { type: 'boolean', default: false },
          // a public route nested under a protected prefix is refused unless acknowledged here
          allowShadow: { type: 'boolean', default: false },
        },
      },
    },
  },
} as const
