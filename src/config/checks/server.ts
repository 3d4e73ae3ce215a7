import { createPrivateKey, X509Certificate } from 'node:crypto'
import { isIP } from 'node:net'
import { resolve } from 'node:path'
import { durationMs, durationSec } from '../duration.js'
import { MAX_CERT_CHAIN_FILE_BYTES, MAX_KEY_FILE_BYTES, readBoundedFile, readFailure } from '../read-file.js'
import type { CorsConfig, GatewayConfig, TlsConfig } from '../types.js'
import { problem, readConfigFile, type CheckContext, type Raw } from './context.js'

/** `server:`, `admin:`, `database:`, `cors:`, `telemetry:`, `login:`, `revocation:` — the listeners and the surroundings. */

export const MIN_ADMIN_TOKEN_CHARS = 32

export function checkServer (s: Raw, databaseUrl: string, ctx: CheckContext): GatewayConfig['server'] {
  checkTrustProxy(s.trustProxy, ctx)
  const tls = s.tls === undefined ? undefined : checkTls(s.tls, ctx)
  if (s.http2 === true && s.tls === undefined) {
    problem(ctx, '/server/http2', 'HTTP/2 needs server.tls (browsers speak h2 only over TLS, and HTTP/1.1 stays offered through ALPN)')
  }
  let workers = s.workers === 'auto' ? ctx.cores : Number(s.workers)
  if (databaseUrl === '') {
    // the embedded store is one process's database: the workers could not share it
    if (s.workers !== 'auto' && workers > 1) {
      problem(ctx, '/server/workers', 'several workers need PostgreSQL (database.url): the embedded store belongs to one process')
    }
    workers = 1
  }
  const writeTimeoutMs = durationMs(s.writeTimeout)
  if (writeTimeoutMs < 1000) problem(ctx, '/server/writeTimeout', 'must be at least 1s')
  return {
    host: s.host,
    port: s.port,
    trustProxy: s.trustProxy,
    realm: s.realm,
    requestTimeoutMs: durationMs(s.requestTimeout),
    keepAliveTimeoutMs: durationMs(s.keepAliveTimeout),
    shutdownTimeoutMs: durationMs(s.shutdownTimeout),
    bodyLimitBytes: s.bodyLimitBytes,
    writeTimeoutMs,
    requestBufferBytes: s.requestBufferBytes,
    workers,
    tls,
    http2: s.http2,
  }
}

function checkTrustProxy (value: boolean | string[], ctx: CheckContext): void {
  if (!Array.isArray(value)) return
  value.forEach((entry, i) => {
    const [addr, bits, extra] = entry.split('/')
    const family = isIP(addr ?? '')
    const maxBits = family === 6 ? 128 : 32
    if (family === 0 || extra !== undefined || (bits !== undefined && !(/^[0-9]+$/.test(bits) && Number(bits) <= maxBits))) {
      problem(ctx, `/server/trustProxy/${i}`, 'must be an IP address or CIDR')
    }
  })
}

function checkTls (t: Raw, ctx: CheckContext): TlsConfig | undefined {
  // certFile may hold the leaf with its intermediates, caFile a whole bundle: the larger cap
  const certPem = readConfigFile(ctx, t.certFile, '/server/tls/certFile', MAX_CERT_CHAIN_FILE_BYTES)
  const keyPem = readConfigFile(ctx, t.keyFile, '/server/tls/keyFile', MAX_KEY_FILE_BYTES)
  const caPem = t.caFile === undefined ? undefined : readConfigFile(ctx, t.caFile, '/server/tls/caFile', MAX_CERT_CHAIN_FILE_BYTES)
  if (certPem === undefined || keyPem === undefined || (t.caFile !== undefined && caPem === undefined)) return undefined
  try {
    const cert = new X509Certificate(certPem)
    const key = createPrivateKey(keyPem)
    if (!cert.checkPrivateKey(key)) problem(ctx, '/server/tls/keyFile', 'does not match the certificate')
    if (Date.parse(cert.validTo) < Date.now()) problem(ctx, '/server/tls/certFile', `the certificate expired on ${cert.validTo}`)
  } catch (err) {
    problem(ctx, '/server/tls', `cannot use the certificate and key: ${(err as Error).message}`)
    return undefined
  }
  return {
    certPem,
    keyPem,
    caPem,
    minVersion: t.minVersion,
    files: { cert: resolve(ctx.baseDir, t.certFile), key: resolve(ctx.baseDir, t.keyFile), ca: t.caFile === undefined ? undefined : resolve(ctx.baseDir, t.caFile) },
  }
}

export function checkAdmin (a: Raw, ctx: CheckContext): GatewayConfig['admin'] {
  if (a.token !== '' && String(a.token).length < MIN_ADMIN_TOKEN_CHARS) {
    problem(ctx, '/admin/token', `must be at least ${MIN_ADMIN_TOKEN_CHARS} characters (or empty to turn the admin API off); e.g. openssl rand -base64 32`)
  }
  const allowedHosts = (a.allowedHosts as string[]).map(h => h.toLowerCase())
  allowedHosts.forEach((h, i) => {
    if (!/^[a-z0-9._-]+$/.test(h)) problem(ctx, `/admin/allowedHosts/${i}`, 'must be a host name without scheme or port, e.g. portcullis-admin.monitoring.svc')
  })
  return { host: a.host, port: a.port, token: a.token, allowedHosts }
}

/** the embedded store's in-memory database: sessions and users go with the process */
export const MEMORY_DATA_DIR = 'memory://'

export function checkDatabase (d: Raw, ctx: CheckContext): GatewayConfig['database'] {
  const statementTimeoutMs = durationMs(d.statementTimeout)
  const lockTimeoutMs = durationMs(d.lockTimeout)
  if (statementTimeoutMs < 100) problem(ctx, '/database/statementTimeout', 'must be at least 100ms')
  if (lockTimeoutMs < 100) problem(ctx, '/database/lockTimeout', 'must be at least 100ms')
  checkPostgresUrl(d.url, '/database/url', ctx)
  checkPostgresUrl(d.listenUrl, '/database/listenUrl', ctx)
  if (d.listenUrl !== '' && d.url === '') problem(ctx, '/database/listenUrl', 'needs database.url (the embedded store has no LISTEN connection)')
  // memory:// is PGlite's in-memory database, not a path to resolve (fix-data-dir-memory-url)
  const dataDir: string = d.dataDir === MEMORY_DATA_DIR ? d.dataDir : resolve(ctx.baseDir, d.dataDir)
  if (d.dataDir !== MEMORY_DATA_DIR && /^[a-z][a-z0-9+.-]*:\/\//i.test(d.dataDir)) {
    problem(ctx, '/database/dataDir', `must be a directory, or ${MEMORY_DATA_DIR} for sessions that last as long as the process`)
  }
  return { url: d.url, listenUrl: d.listenUrl, dataDir, poolSize: d.poolSize, statementTimeoutMs, lockTimeoutMs }
}

/** the files node-postgres reads for a URL's TLS parameters (pg-connection-string), and their caps */
const PG_URL_FILES = { sslcert: MAX_CERT_CHAIN_FILE_BYTES, sslkey: MAX_KEY_FILE_BYTES, sslrootcert: MAX_CERT_CHAIN_FILE_BYTES } as const

/**
 * `mysql://…` or `not a url` passed `check` and failed only at start, with no path. A problem
 * never quotes the URL: it holds the database password. Empty means the embedded store.
 */
function checkPostgresUrl (value: string, path: string, ctx: CheckContext): void {
  if (value === '') return
  let url: URL
  try {
    url = new URL(value)
  } catch {
    problem(ctx, path, 'is not a URL: give postgres://USER:PASSWORD@HOST:5432/DATABASE (or nothing, for the embedded store)')
    return
  }
  if (url.protocol !== 'postgres:' && url.protocol !== 'postgresql:') {
    problem(ctx, path, 'must be a postgres:// or postgresql:// URL (or empty, for the embedded store)')
    return
  }
  // node-postgres reads these files with readFileSync at each new connection, relative to the
  // working directory: a FIFO would block the event loop, and its error quotes the name
  for (const [param, maxBytes] of Object.entries(PG_URL_FILES)) {
    const file = url.searchParams.get(param)
    if (file === null || file === '') continue
    try {
      readBoundedFile(file, maxBytes)
    } catch (err) {
      problem(ctx, path, `cannot read the file of its ${param} parameter: ${readFailure(err)}`)
    }
  }
}

export function checkCors (c: Raw | undefined, ctx: CheckContext): CorsConfig | undefined {
  if (c === undefined) return undefined
  const anyOrigin = (c.origins as string[]).includes('*')
  if (anyOrigin && c.origins.length > 1) problem(ctx, '/cors/origins', '"*" stands alone')
  // browsers refuse `*` with credentials, and reflecting any origin with credentials hands
  // every site the user's session (Fetch standard, CORS protocol and credentials)
  if (anyOrigin && c.credentials === true) problem(ctx, '/cors/origins', '"*" cannot be combined with credentials: true; list the origins')
  const origins = (c.origins as string[]).filter(o => o !== '*').map(o => new URL(o).origin)
  return {
    origins,
    anyOrigin,
    credentials: c.credentials,
    maxAgeSec: durationSec(c.maxAge),
    exposeHeaders: (c.exposeHeaders as string[]).map(h => h.toLowerCase()),
    allowHeaders: (c.allowHeaders as string[]).map(h => h.toLowerCase()),
  }
}

export function checkTelemetry (t: Raw, ctx: CheckContext): GatewayConfig['telemetry'] {
  if (t.otlp === undefined) return { otlp: undefined }
  try {
    // eslint-disable-next-line no-new
    new URL(t.otlp.endpoint)
  } catch {
    problem(ctx, '/telemetry/otlp/endpoint', 'must be an http(s) URL')
  }
  return { otlp: { endpoint: String(t.otlp.endpoint).replace(/\/+$/, ''), serviceName: t.otlp.serviceName, sampleRatio: t.otlp.sampleRatio, timeoutMs: durationMs(t.otlp.timeout) } }
}

export function checkLogin (l: Raw, ctx: CheckContext): GatewayConfig['login'] {
  const t = l.throttle
  const throttle = {
    perAccount: t.perAccount,
    perIp: t.perIp,
    perIpTotal: t.perIpTotal,
    windowSec: durationSec(t.window),
    lockoutSec: durationSec(t.lockout),
    maxLockoutSec: durationSec(t.maxLockout),
    maxEntries: t.maxEntries,
  }
  if (throttle.windowSec < 1) problem(ctx, '/login/throttle/window', 'must be at least 1s')
  if (throttle.maxLockoutSec < throttle.lockoutSec) problem(ctx, '/login/throttle/maxLockout', 'must be at least lockout')
  if (throttle.perIpTotal < throttle.perIp) problem(ctx, '/login/throttle/perIpTotal', 'counts failed and successful attempts: must be at least perIp')
  return { throttle }
}

export function checkRevocation (r: Raw, ctx: CheckContext): GatewayConfig['revocation'] {
  const out = { maxStalenessMs: durationMs(r.maxStaleness), heartbeatIntervalMs: durationMs(r.heartbeatInterval), reconcileIntervalMs: durationMs(r.reconcileInterval) }
  if (out.heartbeatIntervalMs < 500) problem(ctx, '/revocation/heartbeatInterval', 'must be at least 500ms')
  if (out.maxStalenessMs !== 0 && out.maxStalenessMs < 2 * out.heartbeatIntervalMs) {
    problem(ctx, '/revocation/maxStaleness', 'must be 0 (never fail closed) or at least twice heartbeatInterval')
  }
  if (out.reconcileIntervalMs < 10_000) problem(ctx, '/revocation/reconcileInterval', 'must be at least 10s')
  return out
}
