import t from 'tap'
import { execFile } from 'node:child_process'
import { createServer as createTcpServer, type Socket } from 'node:net'
import { join, resolve } from 'node:path'
import { stringify } from 'yaml'
import { issuerTable, routeWarnings } from '../../src/check.js'
import { loadConfigText } from '../../src/config/load.js'
import { makeKey } from '../fixtures/keys.js'
import { keyPair, publicJwk, startJwksServer } from '../tokens/issuers/helpers.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// `portcullis check` beyond validation: warnings about routes that overlap, and the key
// state of every issuer after one fetch.

const ROOT = resolve(import.meta.dirname, '..', '..')
const key = makeKey('EdDSA')
const UP = 'http://127.0.0.1:4001'

function configObject (routes: unknown[], extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: key.privatePem }] }, routes, ...extra }
}
const load = (routes: unknown[], extra: Record<string, unknown> = {}): ReturnType<typeof loadConfigText> => loadConfigText(stringify(configObject(routes, extra)), { env: {} })

interface Run { code: number | null, stdout: string, stderr: string }
function cli (...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout, stderr })
    })
  })
}

const CORP = { name: 'corp', issuer: 'https://corp.test', jwksUri: 'https://corp.test/jwks', audiences: ['api.test'] }
const orders = { name: 'orders', prefix: '/api/orders', upstream: UP, rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': { anyOf: ['orders:write', 'admin'] } } }

t.test('route warnings, one row per finding', async (t) => {
  const rows: Array<{ name: string, routes: unknown[], extra?: Record<string, unknown>, want: RegExp[] }> = [
    {
      name: 'a weaker nested route, acknowledged with allowShadow',
      routes: [orders, { name: 'open', prefix: '/api/orders/open', upstream: UP, auth: 'public', allowShadow: true }],
      want: [/^route "open" \(\/api\/orders\/open\) is nested under "orders" \(\/api\/orders\): every request under \/api\/orders\/open follows "open" only \(weaker, acknowledged with allowShadow\)\n {2}GET, HEAD: orders:read → public\n {2}POST, PUT, PATCH, DELETE, OPTIONS: one of orders:write, admin → public\n {2}\/api\/orders\/open goes to http:\/\/127\.0\.0\.1:4001\/api\/orders\/open instead of http:\/\/127\.0\.0\.1:4001\/orders\/open$/],
    },
    {
      name: 'an equally strict nested route with another upstream',
      routes: [orders, { ...orders, name: 'archive', prefix: '/api/orders/archive', upstream: 'http://127.0.0.1:4002', rewritePrefix: '/' }],
      want: [/^route "archive" .* follows "archive" only \(equally strict\)\n {2}\/api\/orders\/archive goes to http:\/\/127\.0\.0\.1:4002\/ instead of http:\/\/127\.0\.0\.1:4001\/orders\/archive$/],
    },
    {
      name: 'a nested route with fewer methods: the enclosing route is never asked (405)',
      routes: [orders, { name: 'reports', prefix: '/api/orders/reports', upstream: UP, rewritePrefix: '/orders/reports', methods: ['GET'], auth: 'required', scopes: { GET: ['orders:read', 'reports'] } }],
      want: [/\(stricter\)\n {2}GET: orders:read → orders:read \+ reports\n {2}HEAD: orders:read → 405\n {2}POST, PUT, PATCH, DELETE, OPTIONS: one of orders:write, admin → 405$/],
    },
    {
      name: 'a nested route that changes nothing',
      routes: [orders, { ...orders, name: 'same', prefix: '/api/orders/same', rewritePrefix: '/orders/same' }],
      want: [/follows "same" only \(equally strict and identical: the nested route changes nothing\)$/],
    },
    {
      name: 'prefixes that differ only in the last segment\'s spelling',
      routes: [orders, { name: 'order', prefix: '/api/order', upstream: UP, auth: 'public' }, { name: 'a', prefix: '/v1/user-profile', upstream: UP, auth: 'public' }, { name: 'b', prefix: '/v1/UserProfile', upstream: UP, auth: 'public' }],
      want: [/^prefixes \/api\/orders \("orders"\) and \/api\/order \("order"\) differ only in their last segment's case or spelling: a client aiming at one reaches the other \(required vs public\)$/, /^prefixes \/v1\/user-profile \("a"\) and \/v1\/UserProfile \("b"\)/],
    },
    {
      name: 'a WebSocket route whose methods leave out GET',
      routes: [{ name: 'ws', prefix: '/ws', upstream: UP, auth: 'required', websocket: true, methods: ['POST'] }],
      want: [/^route "ws" has websocket: true but its methods \(POST\) leave out GET: no WebSocket upgrade can ever reach it$/],
    },
    {
      name: 'a CORS route that allows only OPTIONS: every preflight is the gateway\'s',
      routes: [{ name: 'opts', prefix: '/opts', upstream: UP, auth: 'public', methods: ['OPTIONS'] }],
      extra: { cors: { origins: ['https://app.test'] } },
      want: [/^route "opts" allows only OPTIONS and answers CORS: the gateway answers every preflight itself/],
    },
    {
      name: 'a public catch-all next to protected routes',
      routes: [orders, { name: 'site', prefix: '/', upstream: 'http://127.0.0.1:4003', auth: 'public' }],
      want: [/^route "site" is a public catch-all \(\/\) next to protected routes \(orders\): any path no other prefix matches .* goes to http:\/\/127\.0\.0\.1:4003 without a token$/],
    },
    {
      name: 'one upstream origin with two pool sizes',
      routes: [{ ...orders, connections: 16 }, { name: 'catalog', prefix: '/api/catalog', upstream: UP, auth: 'public' }],
      want: [/^upstream http:\/\/127\.0\.0\.1:4001 is used with different connections \(orders: 16, catalog: 128\): 2 separate pools, up to 144 connections to it/],
    },
    {
      // fix-same-sub-across-issuers (stop 28 review): upstreams saw the same x-user-id for a
      // partner token carrying a local user's id
      name: 'a route accepting several issuers whose upstream cannot tell them apart',
      routes: [orders, { name: 'partner', prefix: '/partner', upstream: UP, auth: 'required', issuers: ['corp'] }],
      extra: { issuers: [CORP] },
      want: [/^route "orders" \(\/api\/orders\) accepts tokens of 2 issuers \(self, corp\) and its upstream cannot tell them apart: .*identity\.headers: \{iss: x-user-issuer\}/],
    },
    {
      name: 'nothing to say: the issuer is mapped to a header, or sent in an assertion, or one issuer per route',
      routes: [orders, { name: 'asserted', prefix: '/asserted', upstream: UP, auth: 'required', assertion: { audience: 'https://a.internal' } },
        { name: 'own', prefix: '/own', upstream: UP, auth: 'required', issuers: ['self'] }, { name: 'pub', prefix: '/pub', upstream: UP, auth: 'public' }],
      extra: { issuers: [CORP], identity: { headers: { sub: 'x-user-id', iss: 'x-user-issuer' }, assertion: { header: 'x-assertion' } } },
      want: [],
    },
    {
      name: 'nothing to say: separate prefixes, one pool, a public / with no protected route',
      routes: [{ name: 'catalog', prefix: '/api/catalog', upstream: UP, auth: 'optional' }, { name: 'site', prefix: '/', upstream: UP, auth: 'public' }, { name: 'me', prefix: '/me', upstream: UP, auth: 'public' }],
      want: [],
    },
  ]
  for (const row of rows) {
    const warnings = routeWarnings(load(row.routes, row.extra))
    t.equal(warnings.length, row.want.length, `${row.name}: ${row.want.length} warning(s)\n${warnings.join('\n')}`)
    row.want.forEach((re, i) => t.match(warnings[i], re, `${row.name}: warning ${i}`))
  }

  t.throws(() => load([orders, { ...orders, name: 'upper', prefix: '/api/ORDERS' }]), { code: 'config_invalid', problems: [{ path: '/routes/1/prefix', message: /duplicate prefix/ }] },
    'prefixes equal but for case are refused by the loader, not merely warned about (matching ignores case)')
})

/** a port nothing listens on: bound, then closed */
async function closedPort (): Promise<number> {
  const server = createTcpServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

t.test('issuers: the key state after one fetch each, or nothing fetched with --offline', async (t) => {
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  jwks.jwks = { keys: [publicJwk(keyPair('RSA'), { kid: 'rsa-1', alg: 'RS256' }), publicJwk(keyPair('P-256'), { kid: 'ec-1', alg: 'ES256' })] }
  jwks.discovery = { issuer: jwks.origin, jwks_uri: jwks.jwksUrl }
  // a server that accepts and never answers: the fetch must give up on its short timeout
  const silent = createTcpServer((s: Socket) => { s.on('error', () => {}) })
  const held = new Set<Socket>()
  silent.on('connection', (s) => { held.add(s) })
  await new Promise<void>(resolve => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { for (const s of held) s.destroy(); silent.close(() => resolve()) }))
  const silentPort = (silent.address() as { port: number }).port
  const down = await closedPort()

  const issuers = [
    { name: 'corp', issuer: 'https://corp.test', jwksUri: jwks.jwksUrl, audiences: ['api.test'], algorithms: ['RS256', 'ES256'] },
    { name: 'found', issuer: jwks.origin, discovery: true, audiences: ['api.test'], algorithms: ['RS256'] },
    { name: 'gone', issuer: 'https://gone.test', jwksUri: `${jwks.origin}/missing`, audiences: ['api.test'] },
    { name: 'down', issuer: 'https://down.test', jwksUri: `http://127.0.0.1:${down}/jwks`, audiences: ['api.test'] },
    { name: 'slow', issuer: 'https://slow.test', jwksUri: `http://127.0.0.1:${silentPort}/jwks`, audiences: ['api.test'] },
  ]
  const config = load([orders], { issuers })

  const started = performance.now()
  const lines = (await issuerTable(config, { offline: false, timeoutMs: 300 })).split('\n')
  t.ok(performance.now() - started < 5_000, 'the slow issuer is given up on after the short timeout')
  t.match(lines[0], /^self\s+https:\/\/auth\.test\s+own keys\s+EdDSA: k1 \(signs\)$/)
  t.match(lines[1], new RegExp(`^corp\\s+https://corp\\.test\\s+ready: 2 keys \\(rsa-1, ec-1\\)\\s+${jwks.jwksUrl}$`))
  t.match(lines[2], new RegExp(`^found\\s+${jwks.origin}\\s+ready: 1 key \\(rsa-1\\)\\s+${jwks.jwksUrl}$`), 'discovery, then the discovered jwks_uri')
  t.match(lines[3], /^gone\s+https:\/\/gone\.test\s+failed: 0 keys\s+.*\/missing — issuer_keys_http_status: .* answered 404$/)
  t.match(lines[4], /^down\s+https:\/\/down\.test\s+failed: 0 keys\s+.* — issuer_keys_network: /)
  t.match(lines[5], /^slow\s+https:\/\/slow\.test\s+failed: 0 keys\s+.* — issuer_keys_timeout: /)
  t.equal(jwks.hits('/jwks'), 2, 'one fetch of the JWKS per issuer that uses it (corp, found)')
  t.equal(jwks.hits('/.well-known/openid-configuration'), 1, 'one discovery fetch')

  jwks.resetHits()
  const offline = (await issuerTable(config, { offline: true })).split('\n')
  t.match(offline[1], /^corp\s+https:\/\/corp\.test\s+not fetched \(--offline\)\s+jwksUri http:/)
  t.match(offline[2], /^found\s+\S+\s+not fetched \(--offline\)\s+discovery$/)
  t.equal(jwks.hits('/jwks') + jwks.hits('/.well-known/openid-configuration'), 0, '--offline: nothing fetched')
})

t.test('the command: warnings and issuers in the output, exit 0; --offline; usage', async (t) => {
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  jwks.jwks = { keys: [publicJwk(keyPair('RSA'), { kid: 'rsa-1', alg: 'RS256' })] }
  const text = stringify(configObject([
    orders,
    { name: 'open', prefix: '/api/orders/open', upstream: UP, auth: 'public', allowShadow: true },
    { name: 'site', prefix: '/', upstream: 'http://127.0.0.1:4003', auth: 'public' },
  ], { issuers: [{ name: 'corp', issuer: 'https://corp.test', jwksUri: jwks.jwksUrl, audiences: ['api.test'] }] }))
  const dir = t.testdir({ 'gateway.yaml': text })
  const file = join(dir, 'gateway.yaml')
  const [online, offline, bad] = await Promise.all([cli('check', '-c', file), cli('check', '-c', file, '--offline'), cli('check', '-c', file, '--frobnicate')])

  t.equal(online.code, 0, `warnings only: exit 0 (stderr: ${online.stderr})`)
  t.equal(online.stderr, '', 'nothing on stderr')
  t.match(online.stdout, /gateway\.yaml: ok \(3 routes, EdDSA, 1 keys\)\n\nROUTE\s+PREFIX/, 'the summary and the route table first')
  t.match(online.stdout, /\nissuers:\n {2}self\s+https:\/\/auth\.test\s+own keys\s+EdDSA: k1 \(signs\)\n {2}corp\s+https:\/\/corp\.test\s+ready: 1 key \(rsa-1\)/)
  t.match(online.stdout, /\nwarnings \(3\):\n {2}- route "open" \(\/api\/orders\/open\) is nested under "orders".*\n {6}GET, HEAD: orders:read → public\n/)
  t.match(online.stdout, /\n {2}- route "site" is a public catch-all/)
  t.match(online.stdout, /\n {2}- route "orders" \(\/api\/orders\) accepts tokens of 2 issuers \(self, corp\)/)
  t.equal(offline.code, 0)
  t.match(offline.stdout, /corp\s+https:\/\/corp\.test\s+not fetched \(--offline\)/)
  t.equal(jwks.hits('/jwks'), 1, 'the online run fetched once; --offline did not fetch')
  t.equal(bad.code, 2, 'an unknown option: exit 2')
  t.match(bad.stderr, /usage: portcullis check/)
})
