import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import type { ConfigProblem } from '../errors.js'
import { durationMs, durationSec } from './duration.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig, type KeyConfig, type RouteConfig, type ScopeRequirement } from './types.js'

/**
 * Semantic checks that a schema cannot express, each named `checkX`, each reporting
 * `path: message`; and the conversion of the validated tree into GatewayConfig.
 * Insecure settings are refused here, never silently corrected.
 */

type Raw = Record<string, any> // validated by the schema before it gets here

const MIN_HS256_SECRET_BYTES = 32 // RFC 7518 §3.2: a key at least as long as the hash output
const MAX_CLOCK_SKEW_SEC = 300
const MAX_ACCESS_TOKEN_TTL_SEC = 3600
const MAX_REUSE_GRACE_SEC = 60
const MIN_RSA_BITS = 2048

/** headers the identity mapping may never write: they steer HTTP itself or the gateway's own contract */
const FORBIDDEN_IDENTITY_HEADERS = new Set([
  'host', 'authorization', 'cookie', 'set-cookie', 'content-length', 'content-type', 'transfer-encoding',
  'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'x-request-id',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'forwarded', 'expect',
])

export interface NormalizeContext { baseDir: string, source: string }

export function normalize (raw: Raw, ctx: NormalizeContext, problems: ConfigProblem[]): GatewayConfig {
  const tokens = raw.tokens as Raw
  const algorithm = checkAlgorithm(tokens.algorithm, problems)
  const keys = checkKeys(tokens.keys as Raw[], algorithm, ctx, problems)
  const accessTokenTtlSec = durationSec(tokens.accessTokenTtl)
  const clockSkewSec = durationSec(tokens.clockSkew)
  const refreshTokenTtlSec = durationSec(tokens.refreshTokenTtl)
  const sessionMaxAgeSec = durationSec(tokens.sessionMaxAge)
  const reuseGraceSec = durationSec(tokens.refresh.reuseGrace)
  checkLifetimes({ accessTokenTtlSec, clockSkewSec, refreshTokenTtlSec, sessionMaxAgeSec, reuseGraceSec }, problems)
  if (tokens.refresh.transport !== 'body' && String(tokens.refresh.cookieName).startsWith('__Host-') === false) {
    problems.push({ path: '/tokens/refresh/cookieName', message: 'a refresh cookie must use the __Host- prefix (bound to this origin, Secure, Path=/)' })
  }
  const identity = raw.identity as Raw
  const headers = checkIdentityHeaders(identity, problems)
  checkTrustProxy(raw.server.trustProxy, problems)

  return {
    source: ctx.source,
    server: {
      host: raw.server.host,
      port: raw.server.port,
      trustProxy: raw.server.trustProxy,
      realm: raw.server.realm,
      requestTimeoutMs: durationMs(raw.server.requestTimeout),
      keepAliveTimeoutMs: durationMs(raw.server.keepAliveTimeout),
      shutdownTimeoutMs: durationMs(raw.server.shutdownTimeout),
      bodyLimitBytes: raw.server.bodyLimitBytes,
    },
    admin: { ...raw.admin },
    database: { url: raw.database.url, dataDir: resolve(ctx.baseDir, raw.database.dataDir), poolSize: raw.database.poolSize },
    tokens: {
      issuer: tokens.issuer,
      audience: tokens.audience,
      algorithm: algorithm ?? 'EdDSA',
      keys,
      accessTokenTtlSec,
      maxTokenLifetimeSec: tokens.maxTokenLifetime === undefined ? accessTokenTtlSec : durationSec(tokens.maxTokenLifetime),
      refreshTokenTtlSec,
      sessionMaxAgeSec,
      clockSkewSec,
      maxTokenBytes: tokens.maxTokenBytes,
      verifyCacheSize: tokens.verifyCacheSize,
      refresh: { transport: tokens.refresh.transport, cookieName: tokens.refresh.cookieName, reuseGraceSec },
      allowedOrigins: tokens.allowedOrigins,
    },
    identity: {
      headers,
      claimsHeader: String(identity.claimsHeader).toLowerCase(),
      reservedPrefix: String(identity.reservedPrefix).toLowerCase(),
      forwardAuthorization: identity.forwardAuthorization,
      forwardRefreshCookie: identity.forwardRefreshCookie,
    },
    logging: { ...raw.logging },
    routes: checkRoutes(raw.routes as Raw[], problems),
  }
}

/**
 * When the schema already failed, the semantic checks still run, each on its own part
 * of the tree and guarded (a malformed part makes only its own check give up), so one
 * start lists every problem of the file.
 */
export function bestEffortChecks (raw: Raw, ctx: NormalizeContext): ConfigProblem[] {
  const problems: ConfigProblem[] = []
  const guard = (fn: () => unknown): void => {
    const before = problems.length
    try { fn() } catch { problems.length = before }
  }
  const t = raw?.tokens
  let algorithm: Algorithm | undefined
  guard(() => { algorithm = checkAlgorithm(t.algorithm, problems) })
  guard(() => checkKeys(t.keys, algorithm, ctx, problems))
  guard(() => checkLifetimes({
    accessTokenTtlSec: durationSec(t.accessTokenTtl ?? '10m'),
    clockSkewSec: durationSec(t.clockSkew ?? '30s'),
    refreshTokenTtlSec: durationSec(t.refreshTokenTtl ?? '14d'),
    sessionMaxAgeSec: durationSec(t.sessionMaxAge ?? '30d'),
    reuseGraceSec: durationSec(t.refresh?.reuseGrace ?? '10s'),
  }, problems))
  guard(() => checkIdentityHeaders({ headers: raw.identity?.headers ?? {} }, problems))
  guard(() => checkTrustProxy(raw.server?.trustProxy ?? false, problems))
  guard(() => checkRoutes(raw.routes, problems))
  return problems
}

export function checkAlgorithm (alg: string, problems: ConfigProblem[]): Algorithm | undefined {
  if (/^none$/i.test(alg)) {
    problems.push({ path: '/tokens/algorithm', message: '"none" means unsigned tokens and is refused (RFC 8725 §3.1)' })
    return undefined
  }
  if (!(ALGORITHMS as readonly string[]).includes(alg)) {
    problems.push({ path: '/tokens/algorithm', message: `must be one of ${ALGORITHMS.join(', ')}` })
    return undefined
  }
  return alg as Algorithm
}

export function checkKeys (keys: Raw[], alg: Algorithm | undefined, ctx: NormalizeContext, problems: ConfigProblem[]): KeyConfig[] {
  if (keys.length === 0) problems.push({ path: '/tokens/keys', message: 'at least one key is required (the first signs, all verify)' })
  const kids = new Set<string>()
  const out: KeyConfig[] = []
  keys.forEach((k, i) => {
    const path = `/tokens/keys/${i}`
    if (kids.has(k.kid)) problems.push({ path: `${path}/kid`, message: `duplicate kid "${k.kid}"` })
    kids.add(k.kid)
    const key: KeyConfig = { kid: k.kid }
    if (alg === 'HS256') {
      if (k.privateKeyFile !== undefined || k.privateKey !== undefined || k.publicKeyFile !== undefined || k.publicKey !== undefined) {
        problems.push({ path, message: 'HS256 keys take only `secret`' })
      }
      if (typeof k.secret !== 'string' || Buffer.byteLength(k.secret) < MIN_HS256_SECRET_BYTES) {
        problems.push({ path: `${path}/secret`, message: `an HS256 secret must be at least ${MIN_HS256_SECRET_BYTES} bytes` })
      } else key.secret = k.secret
    } else if (alg !== undefined) {
      if (k.secret !== undefined) problems.push({ path: `${path}/secret`, message: `${alg} uses key pairs, not a secret` })
      const privatePem = readPem(k.privateKey, k.privateKeyFile, `${path}/privateKeyFile`, ctx, problems)
      const publicPem = readPem(k.publicKey, k.publicKeyFile, `${path}/publicKeyFile`, ctx, problems)
      if (privatePem === undefined && publicPem === undefined && !problems.some(p => p.path.startsWith(path))) {
        problems.push({ path, message: 'needs privateKeyFile or privateKey (or publicKeyFile/publicKey for a verify-only key)' })
      }
      if (i === 0 && privatePem === undefined && publicPem !== undefined) {
        problems.push({ path, message: 'the first key signs tokens: it needs a private key' })
      }
      const pem = privatePem ?? publicPem
      if (pem !== undefined) {
        const field = privatePem !== undefined ? (k.privateKey !== undefined ? 'privateKey' : 'privateKeyFile') : (k.publicKey !== undefined ? 'publicKey' : 'publicKeyFile')
        const keyObject = parseKey(pem, privatePem !== undefined, `${path}/${field}`, problems)
        if (keyObject !== undefined) checkKeyMatchesAlgorithm(keyObject, alg, path, problems)
      }
      if (privatePem !== undefined) key.privateKeyPem = privatePem
      if (publicPem !== undefined) key.publicKeyPem = publicPem
    }
    out.push(key)
  })
  return out
}

function readPem (inline: string | undefined, file: string | undefined, path: string, ctx: NormalizeContext, problems: ConfigProblem[]): string | undefined {
  if (inline !== undefined && file !== undefined) {
    problems.push({ path, message: 'give the key inline or as a file, not both' })
    return undefined
  }
  if (inline !== undefined) return inline
  if (file === undefined) return undefined
  try {
    return readFileSync(resolve(ctx.baseDir, file), 'utf8')
  } catch (err) {
    problems.push({ path, message: `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}` })
    return undefined
  }
}

function parseKey (pem: string, isPrivate: boolean, path: string, problems: ConfigProblem[]): KeyObject | undefined {
  try {
    return isPrivate ? createPrivateKey(pem) : createPublicKey(pem)
  } catch {
    problems.push({ path, message: `is not a ${isPrivate ? 'private' : 'public'} key in PEM format` })
    return undefined
  }
}

function checkKeyMatchesAlgorithm (key: KeyObject, alg: Algorithm, path: string, problems: ConfigProblem[]): void {
  const type = key.asymmetricKeyType
  const details = key.asymmetricKeyDetails
  const ok = alg === 'EdDSA'
    ? type === 'ed25519'
    : alg === 'ES256'
      ? type === 'ec' && details?.namedCurve === 'prime256v1'
      : (type === 'rsa' || (alg === 'PS256' && type === 'rsa-pss'))
  if (!ok) problems.push({ path, message: `a ${String(type)} key cannot be used with ${alg}` })
  else if ((alg === 'RS256' || alg === 'PS256') && (details?.modulusLength ?? 0) < MIN_RSA_BITS) {
    problems.push({ path, message: `RSA keys must have at least ${MIN_RSA_BITS} bits` })
  }
}

function checkLifetimes (t: { accessTokenTtlSec: number, clockSkewSec: number, refreshTokenTtlSec: number, sessionMaxAgeSec: number, reuseGraceSec: number }, problems: ConfigProblem[]): void {
  if (t.accessTokenTtlSec < 60 || t.accessTokenTtlSec > MAX_ACCESS_TOKEN_TTL_SEC) {
    problems.push({ path: '/tokens/accessTokenTtl', message: 'must be between 1m and 1h (access tokens cannot be recalled from clients; keep them short)' })
  }
  if (t.clockSkewSec > MAX_CLOCK_SKEW_SEC) problems.push({ path: '/tokens/clockSkew', message: 'must be at most 5m' })
  if (t.reuseGraceSec > MAX_REUSE_GRACE_SEC) problems.push({ path: '/tokens/refresh/reuseGrace', message: 'must be at most 60s (a longer window lets a stolen token be replayed)' })
  if (t.refreshTokenTtlSec < t.accessTokenTtlSec) problems.push({ path: '/tokens/refreshTokenTtl', message: 'must be at least accessTokenTtl' })
  if (t.sessionMaxAgeSec < t.refreshTokenTtlSec) problems.push({ path: '/tokens/sessionMaxAge', message: 'must be at least refreshTokenTtl' })
}

function checkIdentityHeaders (identity: Raw, problems: ConfigProblem[]): Record<string, string> {
  const out: Record<string, string> = {}
  const seen = new Set<string>()
  for (const [claim, header] of Object.entries(identity.headers as Record<string, string>)) {
    const name = header.toLowerCase()
    if (FORBIDDEN_IDENTITY_HEADERS.has(name) || name.startsWith('x-forwarded-')) {
      problems.push({ path: `/identity/headers/${claim}`, message: `"${name}" cannot carry identity` })
    }
    if (seen.has(name)) problems.push({ path: `/identity/headers/${claim}`, message: `header "${name}" is mapped twice` })
    seen.add(name)
    out[claim] = name
  }
  return out
}

function checkTrustProxy (value: boolean | string[], problems: ConfigProblem[]): void {
  if (!Array.isArray(value)) return
  value.forEach((entry, i) => {
    const [addr, bits, extra] = entry.split('/')
    const family = isIP(addr ?? '')
    const maxBits = family === 6 ? 128 : 32
    if (family === 0 || extra !== undefined || (bits !== undefined && !(/^[0-9]+$/.test(bits) && Number(bits) <= maxBits))) {
      problems.push({ path: `/server/trustProxy/${i}`, message: 'must be an IP address or CIDR' })
    }
  })
}

export function checkRoutes (routes: Raw[], problems: ConfigProblem[]): RouteConfig[] {
  const out: RouteConfig[] = routes.map((r, i) => checkRoute(r, `/routes/${i}`, problems))
  const names = new Map<string, number>()
  const prefixes = new Map<string, number>()
  out.forEach((r, i) => {
    if (names.has(r.name)) problems.push({ path: `/routes/${i}/name`, message: `duplicate route name "${r.name}" (also /routes/${names.get(r.name)})` })
    names.set(r.name, i)
    // matching is case-insensitive, so are duplicates
    const key = r.prefix.toLowerCase()
    if (prefixes.has(key)) problems.push({ path: `/routes/${i}/prefix`, message: `duplicate prefix "${r.prefix}" (also /routes/${prefixes.get(key)})` })
    prefixes.set(key, i)
  })
  checkShadowing(out, problems)
  return out
}

function checkRoute (r: Raw, path: string, problems: ConfigProblem[]): RouteConfig {
  let upstreamOrigin = ''
  try {
    const url = new URL(r.upstream)
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      problems.push({ path: `${path}/upstream`, message: 'must be an http:// or https:// URL' })
    } else if (url.username !== '' || url.password !== '') {
      problems.push({ path: `${path}/upstream`, message: 'must not carry credentials' })
    } else if ((url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
      problems.push({ path: `${path}/upstream`, message: 'must be an origin (scheme://host:port); put a path in rewritePrefix' })
    }
    upstreamOrigin = url.origin
  } catch {
    problems.push({ path: `${path}/upstream`, message: 'must be an http:// or https:// URL' })
  }
  const methods = r.methods as string[] | undefined
  const scopes: Record<string, ScopeRequirement> = {}
  for (const [method, rule] of Object.entries(r.scopes as Record<string, unknown>)) {
    scopes[method] = Array.isArray(rule) ? { allOf: rule, anyOf: [] } : { allOf: [], anyOf: (rule as { anyOf: string[] }).anyOf }
    if (methods !== undefined && method !== '*' && !methods.includes(method)) {
      problems.push({ path: `${path}/scopes/${method}`, message: `method ${method} is not in this route's methods` })
    }
  }
  if (r.auth !== 'required' && Object.keys(scopes).length > 0) {
    problems.push({ path: `${path}/scopes`, message: `scopes need auth: required (an ${r.auth} route lets requests without a token through)` })
  }
  const prefix = r.prefix === '/' ? '/' : String(r.prefix).replace(/\/+$/, '')
  return {
    name: r.name,
    prefix,
    upstream: r.upstream,
    upstreamOrigin,
    rewritePrefix: r.rewritePrefix ?? prefix,
    methods,
    auth: r.auth,
    scopes,
    timeoutMs: durationMs(r.timeout),
    connections: r.connections,
    websocket: r.websocket,
    allowShadow: r.allowShadow,
  }
}

/** A public/optional route nested under a protected prefix carves a hole in it: refuse unless acknowledged. */
function checkShadowing (routes: RouteConfig[], problems: ConfigProblem[]): void {
  routes.forEach((open, i) => {
    if (open.auth === 'required' || open.allowShadow) return
    const inner = open.prefix.toLowerCase()
    for (const guarded of routes) {
      if (guarded.auth !== 'required') continue
      const outer = guarded.prefix.toLowerCase()
      if (inner !== outer && (outer === '/' || inner.startsWith(outer + '/'))) {
        problems.push({
          path: `/routes/${i}/prefix`,
          message: `${open.auth} route "${open.name}" shadows part of protected route "${guarded.name}" (${guarded.prefix}); set allowShadow: true if that is intended`,
        })
      }
    }
  })
}
