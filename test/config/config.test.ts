/* eslint-disable no-template-curly-in-string -- ${VAR} placeholders are the subject of these tests */
import t from 'tap'
import { createPrivateKey, generateKeyPairSync } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { stringify } from 'yaml'
import { loadConfigFile, loadConfigText } from '../../src/config/load.js'
import { ConfigError, type ConfigProblem } from '../../src/errors.js'
import type { GatewayConfig } from '../../src/config/types.js'
import { makeKey } from '../fixtures/keys.js'

// The loader's contract: YAML → ${VAR} → schema (defaults) → semantic checks → frozen.
// Assertions are on problem paths and lines, never on message prose (a keyword match at most).

const ed = makeKey('EdDSA')
const rsa = makeKey('RS256')
const pem = (pair: { privateKey: { export: (o: { type: 'pkcs8', format: 'pem' }) => string | Buffer } }): string => pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
const rsa1024 = pem(generateKeyPairSync('rsa', { modulusLength: 1024 }))
/** an RSA 2048 private key whose public exponent is `e` (Node generates only sound ones: made by hand from a JWK) */
const rsaWithExponent = (e: bigint): string => {
  const jwk = rsa.privateKey!.export({ format: 'jwk' })
  const hex = e.toString(16)
  const b = Buffer.from(hex.length % 2 === 0 ? hex : '0' + hex, 'hex').toString('base64url')
  return createPrivateKey({ key: { ...jwk, e: b, d: 'AQ', dp: 'AQ', dq: 'AQ' }, format: 'jwk' }).export({ type: 'pkcs8', format: 'pem' }).toString()
}
const p384 = pem(generateKeyPairSync('ec', { namedCurve: 'P-384' }))
const p256 = makeKey('ES256')

/** the smallest valid config: EdDSA key inline, one route */
function minimal (): Record<string, any> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: ed.privatePem }] },
    routes: [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:4001', auth: 'required' }],
  }
}

function load (doc: unknown, env: Record<string, string> = {}): GatewayConfig {
  return loadConfigText(typeof doc === 'string' ? doc : stringify(doc), { env, baseDir: '/srv/gw' })
}

/** the problems a config has; [] when it loads */
function problemsOf (doc: unknown, env: Record<string, string> = {}): ConfigProblem[] {
  try {
    load(doc, env)
    return []
  } catch (err) {
    if (err instanceof ConfigError) return [...err.problems]
    throw err
  }
}

t.test('a minimal config loads with the documented defaults and is frozen', async (t) => {
  const c = load(minimal())
  t.same(c.server, { host: '0.0.0.0', port: 8080, trustProxy: false, realm: 'portcullis', requestTimeoutMs: 30_000, keepAliveTimeoutMs: 72_000, shutdownTimeoutMs: 10_000, bodyLimitBytes: 65_536, writeTimeoutMs: 30_000, requestBufferBytes: 134_217_728, workers: 1, tls: undefined, http2: false }, 'server defaults')
  t.same(c.admin, { host: '127.0.0.1', port: 9090, token: '', allowedHosts: [] }, 'admin defaults')
  t.same(c.database, { url: '', listenUrl: '', dataDir: resolve('/srv/gw', 'data'), poolSize: 10, statementTimeoutMs: 5000, lockTimeoutMs: 2000 }, 'database defaults, dataDir resolved against baseDir')
  t.match(c.tokens, {
    algorithm: 'EdDSA',
    accessTokenTtlSec: 600,
    maxTokenLifetimeSec: 600,
    refreshTokenTtlSec: 14 * 86_400,
    sessionMaxAgeSec: 30 * 86_400,
    clockSkewSec: 30,
    maxTokenBytes: 8192,
    verifyCacheSize: 20_000,
    refresh: { transport: 'cookie', cookieName: '__Host-portcullis-rt', reuseGraceSec: 10 },
    allowedOrigins: [],
  }, 'token defaults, durations converted to seconds')
  t.equal(c.tokens.keys[0]?.privateKeyPem, ed.privatePem, 'inline key kept')
  t.same(c.identity, { mappings: [{ path: ['sub'], header: 'x-user-id' }, { path: ['scope'], header: 'x-user-scopes' }], claimsHeader: '', reservedPrefix: 'x-user-', maxHeaderBytes: 8192, forwardAuthorization: false, forwardRefreshCookie: false, assertion: undefined }, 'identity defaults')
  t.same(c.logging, { level: 'info', decisions: true }, 'logging defaults')
  t.same(c.routes[0], {
    name: 'api',
    prefix: '/api',
    upstream: 'http://127.0.0.1:4001',
    upstreamOrigin: 'http://127.0.0.1:4001',
    upstreamHost: '127.0.0.1:4001',
    rewritePrefix: '/api',
    methods: undefined,
    auth: 'required',
    scopes: {},
    issuers: ['self'],
    timeoutMs: 30_000,
    idleTimeoutMs: 300_000,
    queueLimit: 1000,
    connections: 128,
    maxBodyBytes: 10_485_760,
    requestBuffering: true,
    preserveHost: false,
    sandbox: true,
    cookies: 'route',
    websocket: false,
    cors: true,
    assertionAudience: undefined,
    allowShadow: false,
  }, 'route defaults: rewritePrefix = prefix, every method, 30s timeout')

  t.ok(Object.isFrozen(c), 'config frozen')
  t.ok(Object.isFrozen(c.tokens.keys[0]), 'deeply frozen (keys)')
  t.ok(Object.isFrozen(c.routes[0]?.scopes), 'deeply frozen (route scopes)')
  t.throws(() => { (c.server as { port: number }).port = 1 }, TypeError, 'assignment throws')
  t.throws(() => { (c.routes as unknown as unknown[]).push({}) }, TypeError, 'arrays cannot grow')
  t.equal(c.server.port, 8080)
})

t.test('durations: units and bare seconds', async (t) => {
  const rows: Array<[value: string | number, sec: number]> = [['1m', 60], ['3600s', 3600], ['1h', 3600], ['90', 90], [90, 90], ['120000ms', 120]]
  for (const [value, sec] of rows) {
    t.equal(load({ ...minimal(), tokens: { ...minimal().tokens, accessTokenTtl: value } }).tokens.accessTokenTtlSec, sec, `accessTokenTtl ${JSON.stringify(value)} → ${sec}s`)
  }
  const c = load({ ...minimal(), server: { shutdownTimeout: '1500ms' }, routes: [{ ...minimal().routes[0], timeout: '300ms' }] })
  t.equal(c.server.shutdownTimeoutMs, 1500, 'ms kept in a Ms field')
  t.equal(c.routes[0]?.timeoutMs, 300)
  t.same(problemsOf({ ...minimal(), tokens: { ...minimal().tokens, clockSkew: '10 minutes' } }).map(p => p.path), ['/tokens/clockSkew'], 'a duration without a known unit is refused')
})

t.test('${VAR} and ${VAR:-default} resolve from the passed env, never from YAML', async (t) => {
  const text = [
    'server:',
    '  port: ${PORT:-8081}',
    '  host: ${HOST}',
    'admin:',
    '  token: ${ADMIN_TOKEN:-}',
    'tokens:',
    '  issuer: ${ISSUER}',
    '  audience: aud-${AUD_SUFFIX:-default}',
    '  algorithm: EdDSA',
    '  keys:',
    '    - { kid: k1, privateKey: "${KEY}" }',
    'routes:',
    '  - { name: api, prefix: /api, upstream: "${UPSTREAM:-http://127.0.0.1:4001}", auth: required }',
  ].join('\n')
  const c = load(text, { HOST: '10.0.0.1', ISSUER: 'https://iss.test', KEY: ed.privatePem })
  t.equal(c.server.port, 8081, 'default used and coerced to a number')
  t.equal(c.server.host, '10.0.0.1', '${VAR} from env')
  t.equal(c.admin.token, '', 'empty default')
  t.equal(c.tokens.issuer, 'https://iss.test')
  t.equal(c.tokens.audience, 'aud-default', 'placeholder inside a longer string')
  t.equal(c.tokens.keys[0]?.privateKeyPem, ed.privatePem, 'a multi-line PEM from env arrives intact')
  t.equal(c.routes[0]?.upstream, 'http://127.0.0.1:4001', 'default containing a colon and slashes')

  const c2 = load(text, { HOST: 'h', ISSUER: 'https://iss.test', KEY: ed.privatePem, PORT: '9000', AUD_SUFFIX: 'x', UPSTREAM: 'http://10.1.1.1:80' })
  t.equal(c2.server.port, 9000, 'env beats the default')
  t.equal(c2.tokens.audience, 'aud-x')
  t.equal(c2.routes[0]?.upstreamOrigin, 'http://10.1.1.1')

  const missing = problemsOf(text, { KEY: ed.privatePem })
  t.same(missing.filter(p => /HOST|ISSUER/.test(p.message)).map(p => [p.path, p.line]), [['/server/host', 3], ['/tokens/issuer', 7]], 'each unset ${VAR} is a problem at its path and line')
  t.ok(missing.some(p => p.path === '/server/host' && /HOST/.test(p.message)), 'the message names the variable')

  // an env value full of YAML syntax stays one plain string: no injection
  const injected = 'a: b\n- c\nalgorithm: none\n  keys: []'
  const c3 = load(text, { HOST: injected, ISSUER: 'https://iss.test', KEY: ed.privatePem })
  t.equal(c3.server.host, injected, 'YAML in an env value is not parsed')
  t.equal(c3.tokens.algorithm, 'EdDSA', 'and did not change any other setting')
  const c4 = load(text, { HOST: '${ISSUER}', ISSUER: 'https://iss.test', KEY: ed.privatePem })
  t.equal(c4.server.host, '${ISSUER}', 'an env value is not expanded again')
  const flow = problemsOf(text, { HOST: 'h', ISSUER: 'https://iss.test', KEY: ed.privatePem, PORT: '{ port: 1 }' })
  t.same(flow.map(p => p.path), ['/server/port'], 'a YAML mapping in a number setting is just a bad number')
})

t.test('a file with several problems lists all of them, with path and YAML line', async (t) => {
  // schema problems: all reported in one pass
  const schemaText = [
    'server:', //          1
    '  port: 99999', //    2
    '  bogus: 1', //       3
    'tokens:', //          4
    '  issuer: ""', //     5
    '  audience: api', //  6
    '  algorithm: EdDSA', // 7
    '  keys:', //          8
    '    - kid: "bad kid"', // 9
    '      privateKey: x', // 10
    '  clockSkew: soon', // 11
    'routes:', //          12
    '  - name: a', //      13
    '    prefix: api', //  14
    '    upstream: http://127.0.0.1:1', // 15
    '    auth: maybe', //  16
    '    methods: [GET, FETCH]', // 17
    '    scopez: {}', //   18
  ].join('\n')
  let err: unknown
  try { load(schemaText) } catch (e) { err = e }
  t.ok(err instanceof ConfigError, 'a ConfigError')
  t.equal((err as ConfigError).code, 'config_invalid')
  const got = (err as ConfigError).problems.map(p => `${p.path}@${p.line}`).sort()
  t.same(got, [
    '/routes/0/auth@16',
    '/routes/0/methods/1@17',
    '/routes/0/prefix@14',
    '/routes/0/scopez@18',
    '/server/bogus@3',
    '/server/port@2',
    '/tokens/clockSkew@11',
    '/tokens/issuer@5',
    '/tokens/keys/0/kid@9',
    '/tokens/keys/0/privateKey@10', // semantic: not a PEM key, listed beside the schema problems
  ].sort(), 'every schema problem, each with its path and line')
  t.match((err as Error).message, /- \/server\/port: .* \(line 2\)/, 'the message lists problems as "- /path: message (line N)"')

  // semantic problems: all reported in one pass too
  const semanticText = [
    'tokens:', //                       1
    '  issuer: https://auth.test', //   2
    '  audience: api', //               3
    '  algorithm: HS256', //            4
    '  keys:', //                       5
    '    - kid: k1', //                 6
    '      secret: too-short', //       7
    '  accessTokenTtl: 2h', //          8
    '  clockSkew: 6m', //               9
    '  refresh: { cookieName: rt }', // 10
    'identity:', //                     11
    '  headers: { sub: Host }', //      12
    'server:', //                       13
    '  trustProxy: [10.0.0.0/40]', //   14
    'routes:', //                       15
    '  - name: a', //                   16
    '    prefix: /api', //              17
    '    upstream: ftp://files.test', // 18
    '    auth: required', //            19
    '  - name: b', //                   20
    '    prefix: /api/public', //       21
    '    upstream: http://127.0.0.1:1', // 22
    '    auth: public', //              23
    '    scopes: { GET: [x] }', //      24
  ].join('\n')
  const semantic = problemsOf(semanticText).map(p => `${p.path}@${p.line}`).sort()
  t.same(semantic, [
    '/identity/headers/sub@12',
    '/routes/0/upstream@18',
    '/routes/1/prefix@21',
    '/routes/1/scopes@24',
    '/server/trustProxy/0@14',
    '/tokens/accessTokenTtl@8',
    '/tokens/clockSkew@9',
    '/tokens/keys/0/secret@7',
    '/tokens/refresh/cookieName@10',
  ].sort(), 'every semantic problem, each with its path and line')

  // a schema problem and a semantic problem in one file: the semantic checks only run on a
  // schema-valid tree, so today only the schema problem is listed (known gap, see report)
  const mixed = problemsOf({ ...minimal(), server: { port: 'eighty' }, tokens: { ...minimal().tokens, clockSkew: '1h' } }).map(p => p.path).sort()
  t.ok(mixed.includes('/server/port'), 'mixed file: the schema problem is listed')
  t.ok(mixed.includes('/tokens/clockSkew'), 'mixed file: the semantic problem is listed too')

  const yamlError = problemsOf('tokens: [\nroutes: {')
  t.ok(yamlError.length > 0 && yamlError.every(p => typeof p.line === 'number'), 'a YAML syntax error carries a line')
  const dupKey = problemsOf('tokens: {}\ntokens: {}\nroutes: []')
  t.same(dupKey.map(p => p.line), [2], 'a duplicate key is a YAML problem at its line')
})

interface Row {
  name: string
  /** changes a fresh minimal config */
  edit: (c: Record<string, any>) => void
  /** expected problem paths (sorted); [] = loads */
  paths: string[]
  match?: RegExp
}

const setRoutes = (...routes: Array<Record<string, unknown>>) => (c: Record<string, any>): void => {
  c.routes = routes.map((r, i) => ({ name: `r${i}`, upstream: 'http://127.0.0.1:4001', auth: 'required', ...r }))
}
const setKey = (algorithm: string, key: Record<string, unknown>) => (c: Record<string, any>): void => {
  c.tokens.algorithm = algorithm
  c.tokens.keys = [{ kid: 'k1', ...key }]
}
const upstream = (url: string) => setRoutes({ prefix: '/api', upstream: url })

const rows: Row[] = [
  // unknown settings
  { name: 'unknown top-level key', edit: c => { c.extra = 1 }, paths: ['/extra'], match: /unknown/ },
  { name: 'unknown nested key', edit: c => { c.tokens.refresh = { cookiename: '__Host-x' } }, paths: ['/tokens/refresh/cookiename'] },
  { name: 'unknown key in a route', edit: c => { c.routes[0].scope = { GET: ['a'] } }, paths: ['/routes/0/scope'] },
  { name: 'unknown key in a key entry', edit: c => { c.tokens.keys[0].alg = 'EdDSA' }, paths: ['/tokens/keys/0/alg'] },
  { name: 'missing tokens', edit: c => { delete c.tokens }, paths: ['/tokens'], match: /required/ },
  // HS256 secrets
  { name: 'HS256 secret of 31 bytes', edit: setKey('HS256', { secret: 'x'.repeat(31) }), paths: ['/tokens/keys/0/secret'], match: /32/ },
  { name: 'HS256 secret of 32 bytes', edit: setKey('HS256', { secret: 'x'.repeat(32) }), paths: [] },
  { name: 'HS256 secret counted in bytes, not characters (11 × 3 bytes)', edit: setKey('HS256', { secret: '€'.repeat(11) }), paths: [] },
  { name: 'HS256 without a secret', edit: setKey('HS256', {}), paths: ['/tokens/keys/0/secret'] },
  { name: 'HS256 with a PEM key', edit: setKey('HS256', { secret: 'x'.repeat(32), privateKey: ed.privatePem }), paths: ['/tokens/keys/0'] },
  // keys
  { name: 'no keys', edit: c => { c.tokens.keys = [] }, paths: ['/tokens/keys'] },
  { name: 'a key with nothing in it', edit: setKey('EdDSA', {}), paths: ['/tokens/keys/0'] },
  { name: 'a key that is not PEM', edit: setKey('EdDSA', { privateKey: 'not a pem' }), paths: ['/tokens/keys/0/privateKey'] },
  { name: 'a secret on an EdDSA key', edit: setKey('EdDSA', { privateKey: ed.privatePem, secret: 'x'.repeat(40) }), paths: ['/tokens/keys/0/secret'] },
  { name: 'duplicate kid', edit: c => { c.tokens.keys.push({ kid: 'k1', publicKey: ed.publicPem }) }, paths: ['/tokens/keys/1/kid'] },
  { name: 'first key verify-only', edit: setKey('EdDSA', { publicKey: ed.publicPem }), paths: ['/tokens/keys/0'], match: /private/ },
  { name: 'key inline and as a file', edit: setKey('EdDSA', { privateKey: ed.privatePem, privateKeyFile: './k1.pem' }), paths: ['/tokens/keys/0/privateKeyFile'] },
  { name: 'key file that does not exist', edit: setKey('EdDSA', { privateKeyFile: './nope.pem' }), paths: ['/tokens/keys/0/privateKeyFile'], match: /ENOENT/ },
  // algorithm
  ...['none', 'None', 'NONE', 'nOnE'].map((alg): Row => ({ name: `algorithm ${alg}`, edit: c => { c.tokens.algorithm = alg }, paths: ['/tokens/algorithm'], match: /none/ })),
  { name: 'unknown algorithm', edit: c => { c.tokens.algorithm = 'RS512' }, paths: ['/tokens/algorithm'] },
  { name: 'algorithm in the wrong case', edit: c => { c.tokens.algorithm = 'eddsa' }, paths: ['/tokens/algorithm'] },
  // key type vs algorithm
  { name: 'RSA key with EdDSA', edit: setKey('EdDSA', { privateKey: rsa.privatePem }), paths: ['/tokens/keys/0'], match: /rsa/ },
  { name: 'Ed25519 key with RS256', edit: setKey('RS256', { privateKey: ed.privatePem }), paths: ['/tokens/keys/0'], match: /ed25519/ },
  { name: 'P-384 key with ES256', edit: setKey('ES256', { privateKey: p384 }), paths: ['/tokens/keys/0'] },
  { name: 'P-256 key with ES256', edit: setKey('ES256', { privateKey: p256.privatePem }), paths: [] },
  { name: 'RSA 2048 with RS256', edit: setKey('RS256', { privateKey: rsa.privatePem }), paths: [] },
  { name: 'RSA 2048 with PS256', edit: setKey('PS256', { privateKey: rsa.privatePem }), paths: [] },
  { name: 'RSA 1024 with RS256', edit: setKey('RS256', { privateKey: rsa1024 }), paths: ['/tokens/keys/0'], match: /2048/ },
  { name: 'RSA 1024 with PS256', edit: setKey('PS256', { privateKey: rsa1024 }), paths: ['/tokens/keys/0'], match: /2048/ },
  { name: 'RSA exponent 1 (fix-idp-rsa-exponent)', edit: setKey('RS256', { privateKey: rsaWithExponent(1n) }), paths: ['/tokens/keys/0'], match: /exponent/ },
  { name: 'RSA exponent 2', edit: setKey('PS256', { privateKey: rsaWithExponent(2n) }), paths: ['/tokens/keys/0'], match: /exponent/ },
  { name: 'RSA exponent 2^40 + 1', edit: setKey('RS256', { privateKey: rsaWithExponent((1n << 40n) + 1n) }), paths: ['/tokens/keys/0'], match: /exponent/ },
  // lifetimes
  { name: 'clockSkew 5m', edit: c => { c.tokens.clockSkew = '5m' }, paths: [] },
  { name: 'clockSkew 301s', edit: c => { c.tokens.clockSkew = '301s' }, paths: ['/tokens/clockSkew'] },
  { name: 'clockSkew 1h', edit: c => { c.tokens.clockSkew = '1h' }, paths: ['/tokens/clockSkew'] },
  { name: 'accessTokenTtl 1h', edit: c => { c.tokens.accessTokenTtl = '1h' }, paths: [] },
  { name: 'accessTokenTtl 3601s', edit: c => { c.tokens.accessTokenTtl = '3601s' }, paths: ['/tokens/accessTokenTtl'] },
  { name: 'accessTokenTtl 1d', edit: c => { c.tokens.accessTokenTtl = '1d' }, paths: ['/tokens/accessTokenTtl'] },
  { name: 'accessTokenTtl 30s', edit: c => { c.tokens.accessTokenTtl = '30s' }, paths: ['/tokens/accessTokenTtl'] },
  { name: 'reuseGrace 2m', edit: c => { c.tokens.refresh = { reuseGrace: '2m' } }, paths: ['/tokens/refresh/reuseGrace'] },
  { name: 'refreshTokenTtl shorter than the access token', edit: c => { c.tokens.refreshTokenTtl = '5m' }, paths: ['/tokens/refreshTokenTtl'] },
  { name: 'sessionMaxAge shorter than the refresh token', edit: c => { c.tokens.sessionMaxAge = '1d' }, paths: ['/tokens/sessionMaxAge'] },
  // refresh cookie
  { name: 'refresh cookie without __Host-', edit: c => { c.tokens.refresh = { cookieName: 'portcullis-rt' } }, paths: ['/tokens/refresh/cookieName'], match: /__Host-/ },
  { name: 'refresh cookie with __Secure- only', edit: c => { c.tokens.refresh = { cookieName: '__Secure-rt', transport: 'both' } }, paths: ['/tokens/refresh/cookieName'] },
  { name: 'cookie name irrelevant with body transport', edit: c => { c.tokens.refresh = { cookieName: 'rt', transport: 'body' } }, paths: [] },
  // identity headers
  ...['host', 'Host', 'authorization', 'AUTHORIZATION', 'cookie', 'x-forwarded-for', 'x-forwarded-anything', 'x-request-id', 'transfer-encoding'].map((h): Row => ({
    name: `identity header ${h}`, edit: c => { c.identity = { headers: { sub: h } } }, paths: ['/identity/headers/sub'],
  })),
  { name: 'two claims into one header (any case)', edit: c => { c.identity = { headers: { sub: 'x-user-id', uid: 'X-User-Id' } } }, paths: ['/identity/headers/uid'] },
  { name: 'identity header name with a space', edit: c => { c.identity = { headers: { sub: 'x user' } } }, paths: ['/identity/headers'] },
  // trustProxy
  { name: 'trustProxy CIDR /33', edit: c => { c.server = { trustProxy: ['10.0.0.0/33'] } }, paths: ['/server/trustProxy/0'] },
  { name: 'trustProxy IPv6 /129', edit: c => { c.server = { trustProxy: ['::1', 'fd00::/129'] } }, paths: ['/server/trustProxy/1'] },
  { name: 'trustProxy host name', edit: c => { c.server = { trustProxy: ['proxy.internal'] } }, paths: ['/server/trustProxy/0'] },
  { name: 'trustProxy two slashes', edit: c => { c.server = { trustProxy: ['10.0.0.0/8/1'] } }, paths: ['/server/trustProxy/0'] },
  { name: 'trustProxy non-numeric bits', edit: c => { c.server = { trustProxy: ['10.0.0.0/x'] } }, paths: ['/server/trustProxy/0'] },
  { name: 'trustProxy valid list', edit: c => { c.server = { trustProxy: ['10.0.0.0/8', '127.0.0.1', 'fd00::/8', '::1/128'] } }, paths: [] },
  { name: 'trustProxy true', edit: c => { c.server = { trustProxy: true } }, paths: [] },
  // upstreams
  ...['ftp://files.test', 'file:///etc/passwd', 'javascript:alert(1)', 'not a url', 'ws://127.0.0.1:1', 'gopher://x'].map((u): Row => ({
    name: `upstream ${u}`, edit: upstream(u), paths: ['/routes/0/upstream'], match: /http/,
  })),
  { name: 'upstream with a path', edit: upstream('http://127.0.0.1:4001/v1'), paths: ['/routes/0/upstream'], match: /rewritePrefix/ },
  { name: 'upstream with credentials', edit: upstream('http://user:pw@127.0.0.1:4001'), paths: ['/routes/0/upstream'], match: /credentials/ },
  { name: 'upstream with a user only', edit: upstream('https://user@127.0.0.1:4001'), paths: ['/routes/0/upstream'] },
  { name: 'upstream with a query', edit: upstream('http://127.0.0.1:4001?x=1'), paths: ['/routes/0/upstream'] },
  { name: 'upstream with a fragment', edit: upstream('http://127.0.0.1:4001#x'), paths: ['/routes/0/upstream'] },
  { name: 'upstream https with a trailing slash', edit: upstream('https://svc.internal:8443/'), paths: [] },
  // routes
  { name: 'duplicate prefix', edit: setRoutes({ prefix: '/api' }, { prefix: '/api' }), paths: ['/routes/1/prefix'] },
  { name: 'duplicate prefix, other case', edit: setRoutes({ prefix: '/api/Orders' }, { prefix: '/API/orders' }), paths: ['/routes/1/prefix'] },
  { name: 'duplicate prefix, trailing slash', edit: setRoutes({ prefix: '/api' }, { prefix: '/api/' }), paths: ['/routes/1/prefix'] },
  { name: 'duplicate route name', edit: c => { setRoutes({ prefix: '/a' }, { prefix: '/b' })(c); c.routes[1].name = 'r0' }, paths: ['/routes/1/name'] },
  { name: 'public route nested under a protected one', edit: setRoutes({ prefix: '/api' }, { prefix: '/api/health', auth: 'public' }), paths: ['/routes/1/prefix'], match: /shadow/ },
  { name: 'optional route nested under a protected one', edit: setRoutes({ prefix: '/api/admin', auth: 'optional' }, { prefix: '/api' }), paths: ['/routes/0/prefix'] },
  { name: 'shadowing across case', edit: setRoutes({ prefix: '/API' }, { prefix: '/api/Health', auth: 'public' }), paths: ['/routes/1/prefix'] },
  { name: 'public route under a protected root', edit: setRoutes({ prefix: '/' }, { prefix: '/status', auth: 'public' }), paths: ['/routes/1/prefix'] },
  { name: 'shadowing acknowledged with allowShadow', edit: setRoutes({ prefix: '/api' }, { prefix: '/api/health', auth: 'public', allowShadow: true }), paths: [] },
  { name: 'a sibling prefix is not nested', edit: setRoutes({ prefix: '/api' }, { prefix: '/api-docs', auth: 'public' }), paths: [] },
  { name: 'protected under public is fine', edit: setRoutes({ prefix: '/pub', auth: 'public' }, { prefix: '/pub/private' }), paths: [] },
  { name: 'scopes on a public route', edit: setRoutes({ prefix: '/p', auth: 'public', scopes: { GET: ['a'] } }), paths: ['/routes/0/scopes'], match: /required/ },
  { name: 'scopes on an optional route', edit: setRoutes({ prefix: '/p', auth: 'optional', scopes: { '*': { anyOf: ['a'] } } }), paths: ['/routes/0/scopes'] },
  { name: 'scope for a method the route does not allow', edit: setRoutes({ prefix: '/p', methods: ['GET'], scopes: { POST: ['a'], GET: [] } }), paths: ['/routes/0/scopes/POST'] },
  { name: 'auth missing: no implicit allow', edit: c => { delete c.routes[0].auth }, paths: ['/routes/0/auth'] },
  { name: 'scope with a space', edit: setRoutes({ prefix: '/p', scopes: { GET: ['a b'] } }), paths: ['/routes/0/scopes/GET'] },
  { name: 'empty anyOf', edit: setRoutes({ prefix: '/p', scopes: { GET: { anyOf: [] } } }), paths: ['/routes/0/scopes/GET'] },
  { name: 'no routes', edit: c => { c.routes = [] }, paths: ['/routes'] },
]

t.test('insecure or invalid settings are refused with their path', async (t) => {
  for (const row of rows) {
    const c = minimal()
    row.edit(c)
    const problems = problemsOf(c)
    t.same(problems.map(p => p.path).sort(), row.paths, row.name)
    if (row.match !== undefined) t.match(problems.map(p => p.message).join('\n'), row.match, `${row.name}: message mentions ${String(row.match)}`)
    t.ok(problems.every(p => p.line === undefined || (Number.isInteger(p.line) && p.line > 0)), `${row.name}: lines are 1-based`)
  }
})

t.test('key files resolve against the config file directory', async (t) => {
  const dir = t.testdir({ keys: { 'k1.pem': ed.privatePem } })
  const c = minimal()
  c.tokens.keys = [{ kid: 'k1', privateKeyFile: './keys/k1.pem' }]
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify(c))
  const loaded = loadConfigFile(file, { env: {} })
  t.equal(loaded.tokens.keys[0]?.privateKeyPem, ed.privatePem, 'key read relative to the file')
  t.equal(loaded.database.dataDir, join(dir, 'data'), 'dataDir relative to the file')
  t.equal(loaded.source, file)
  t.throws(() => loadConfigFile(join(dir, 'missing.yaml'), { env: {} }), { code: 'config_invalid' }, 'a missing file is a ConfigError')
})
