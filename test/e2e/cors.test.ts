/**
 * CORS at the gateway (src/pipeline/cors.ts; DESIGN "Browser clients"), over real sockets:
 * preflights answered before authentication and never proxied, credentials only for listed
 * origins and never with `*`, `Vary: Origin` on every answer of a CORS route, exposed
 * headers, upstream Access-Control-* replaced, `routes[].cors: false`, and the auth
 * endpoints' CSRF rules alongside CORS. The browser's side of the same rules:
 * test/browser/cors.test.ts.
 */
import t from 'tap'
import { ConfigError } from '../../src/errors.js'
import { loadConfigText } from '../../src/config/load.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { openStore } from '../../src/sessions/store.js'
import { stringify } from 'yaml'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'

const APP = 'https://app.example.test'
/** listed in cors.origins but not in tokens.allowedOrigins: may read answers, may not use the cookie */
const PARTNER = 'https://partner.example.test'
const EVIL = 'https://evil.example.test'
const EXPOSED = 'x-request-id, www-authenticate, x-total-count, portcullis-error' // the gateway's mark, always exposed (fix-client-trusts-upstream-answers)
const COOKIE = '__Host-portcullis-rt'

const upstream = await startUpstream((req, res) => {
  if (req.url.startsWith('/api/acao') || req.url.startsWith('/raw')) {
    // an upstream with CORS opinions of its own
    res.setHeader('access-control-allow-origin', '*')
    res.setHeader('access-control-allow-credentials', 'true')
    res.setHeader('access-control-expose-headers', 'x-secret')
    res.setHeader('access-control-allow-methods', 'DELETE')
    res.setHeader('vary', 'Accept-Encoding')
  }
  if (req.url.startsWith('/api/vary-origin')) res.setHeader('vary', 'accept, origin')
  if (req.url.startsWith('/api/vary-star')) res.setHeader('vary', '*')
  res.setHeader('x-total-count', '3')
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ method: req.method, url: req.url }))
})
t.teardown(() => upstream.close())

const key = makeKey('EdDSA')
const store = await openStore({ dataDir: 'memory://' })
const config = baseConfig(key, [
  { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
  { name: 'reports', prefix: '/reports', upstream: upstream.url, auth: 'required', scopes: { '*': ['reports:read'] } },
  { name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public', methods: ['GET', 'POST'] },
  { name: 'raw', prefix: '/raw', upstream: upstream.url, auth: 'public', cors: false },
  { name: 'rawreq', prefix: '/rawreq', upstream: upstream.url, auth: 'required', cors: false },
], { tokens: { refresh: { transport: 'cookie' }, allowedOrigins: [APP] } })
config.cors = { origins: [APP, PARTNER], credentials: true, maxAge: '5m', exposeHeaders: ['x-request-id', 'www-authenticate', 'x-total-count'] }
const gw = await startGateway(t, config, { store })
await usersAdd(store, { name: 'alice', password: 'alice-password-1', scopes: ['orders:read'] })
const token = signWith(key, goodClaims())

const preflight = (path: string, origin: string, method = 'PUT'): Promise<RawResponse> =>
  raw(gw.url, path, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': method, 'access-control-request-headers': 'authorization, content-type' } })
const get = (path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<RawResponse> =>
  raw(gw.url, path, { method, headers: { authorization: `Bearer ${token}`, ...headers } })
const corsHeaders = (res: RawResponse): string[] => Object.keys(res.headers).filter((h) => h.startsWith('access-control-')).sort()
const varyOf = (res: RawResponse): string => String(res.headers.vary ?? '')

t.test('preflights are answered before authentication and never proxied', async (t) => {
  for (const [path, allow] of [['/api/orders/1', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'], ['/reports/q', 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS'], ['/pub/page', 'GET, POST']] as const) {
    const seen = upstream.requests.length
    const res = await preflight(path, APP)
    t.equal(res.status, 204, `${path}: 204 with no token`)
    t.match(res.headers, {
      'access-control-allow-origin': APP,
      'access-control-allow-credentials': 'true',
      'access-control-allow-methods': allow,
      'access-control-allow-headers': 'authorization, content-type, x-request-id',
      'access-control-max-age': '300',
      vary: 'Origin',
    }, `${path}: the gateway's answer`)
    t.equal(res.headers['www-authenticate'], undefined, `${path}: no challenge`)
    t.equal(res.body, '')
    t.equal(upstream.requests.length, seen, `${path}: the upstream saw nothing`)
  }
})

t.test('credentials only for listed origins: an unlisted origin gets no CORS headers, and 403 on preflight', async (t) => {
  for (const origin of [EVIL, 'null', `${APP}:8443`, 'http://app.example.test']) {
    const seen = upstream.requests.length
    const pre = await preflight('/api/orders/1', origin)
    t.equal(pre.status, 403, `${origin}: preflight refused`)
    t.equal(pre.json().code, 'cors_rejected')
    t.same(corsHeaders(pre), [], `${origin}: no Access-Control-* at all`)
    // the pipeline throws before it sets Vary (src/pipeline/pipeline.ts; the one-line fix is the lead's to apply)
    t.equal(varyOf(pre), 'Origin', `${origin}: Vary on the refusal`)
    t.equal(upstream.requests.length, seen, `${origin}: the upstream saw nothing`)

    // CORS is enforced by browsers: the request itself is served, its answer just cannot be read there
    const res = await get('/api/orders/1', { origin })
    t.equal(res.status, 200)
    t.same(corsHeaders(res), [], `${origin}: the proxied answer grants nothing`)
    t.equal(varyOf(res), 'Origin')
  }
})

t.test('never `*` with credentials: the configuration is refused', async (t) => {
  const load = (cors: unknown): unknown => loadConfigText(stringify({ ...baseConfig(key, [{ name: 'a', prefix: '/a', upstream: upstream.url, auth: 'public' }]), cors }), { env: {} })
  for (const [cors, message] of [
    [{ origins: ['*'] }, /cannot be combined with credentials/], // credentials default to true
    [{ origins: ['*'], credentials: true }, /cannot be combined with credentials/],
    [{ origins: ['*', APP], credentials: false }, /stands alone/],
  ] as const) {
    const err = (() => { try { load(cors); return undefined } catch (e) { return e } })()
    t.ok(err instanceof ConfigError, `${JSON.stringify(cors)} is refused`)
    t.match((err as ConfigError).problems, [{ path: '/cors/origins', message }])
  }
  t.doesNotThrow(() => load({ origins: ['*'], credentials: false }), 'any origin without credentials is allowed')
})

t.test('`*` without credentials: any origin, no credentials header', async (t) => {
  const open = baseConfig(key, [{ name: 'pub', prefix: '/pub', upstream: upstream.url, auth: 'public' }])
  open.cors = { origins: ['*'], credentials: false }
  const gw2 = await startGateway(t, open)
  const pre = await raw(gw2.url, '/pub/x', { method: 'OPTIONS', headers: { origin: EVIL, 'access-control-request-method': 'GET' } })
  t.equal(pre.status, 204)
  t.equal(pre.headers['access-control-allow-origin'], '*')
  t.equal(pre.headers['access-control-allow-credentials'], undefined)
  const res = await raw(gw2.url, '/pub/x', { headers: { origin: EVIL } })
  t.equal(res.headers['access-control-allow-origin'], '*')
  t.equal(res.headers['access-control-allow-credentials'], undefined)
})

t.test('Vary: Origin and the CORS headers on every answer of a CORS route, proxied or the gateway\'s own', async (t) => {
  const cases: Array<[string, () => Promise<RawResponse>, number]> = [
    ['proxied 200', () => get('/api/orders/1', { origin: APP }), 200],
    ['public 200', () => raw(gw.url, '/pub/page', { headers: { origin: APP } }), 200],
    ['401 missing_token', () => raw(gw.url, '/api/orders/1', { headers: { origin: APP } }), 401],
    ['401 invalid token', () => raw(gw.url, '/api/orders/1', { headers: { origin: APP, authorization: 'Bearer e30.e30.e30' } }), 401],
    ['403 insufficient_scope', () => get('/reports/q', { origin: APP }), 403],
    ['405 method_not_allowed', () => raw(gw.url, '/pub/page', { method: 'DELETE', headers: { origin: APP } }), 405],
    ['preflight 204', () => preflight('/api/x', APP), 204],
  ]
  for (const [name, send, status] of cases) {
    const res = await send()
    t.equal(res.status, status, name)
    t.equal(varyOf(res), 'Origin', `${name}: Vary: Origin`)
    t.equal(res.headers['access-control-allow-origin'], APP, `${name}: readable by the app`)
    t.equal(res.headers['access-control-allow-credentials'], 'true')
    if (status !== 204) t.equal(res.headers['access-control-expose-headers'], EXPOSED, `${name}: exposed headers`)
  }
  for (const [name, send] of [['proxied, no Origin', () => get('/api/orders/1')], ['401, no Origin', () => raw(gw.url, '/api/orders/1')]] as const) {
    const res = await send()
    t.equal(varyOf(res), 'Origin', `${name}: Vary: Origin all the same (a cache must not reuse it for an origin)`)
    t.same(corsHeaders(res), [], `${name}: nothing else`)
  }
  const challenge = await raw(gw.url, '/api/orders/1', { headers: { origin: APP } })
  t.match(challenge.headers['www-authenticate'], /^Bearer /, 'the challenge the SDK reads is there, and exposed')
})

t.test("upstream Access-Control-* headers are replaced by the gateway's, its Vary merged", async (t) => {
  const fromApp = await get('/api/acao', { origin: APP })
  t.equal(fromApp.status, 200)
  t.match(fromApp.headers, { 'access-control-allow-origin': APP, 'access-control-allow-credentials': 'true', 'access-control-expose-headers': EXPOSED })
  t.equal(fromApp.headers['access-control-allow-methods'], undefined, "the upstream's own is dropped")
  t.equal(varyOf(fromApp), 'Accept-Encoding, Origin')
  t.equal(fromApp.headers['x-total-count'], '3')

  const fromEvil = await get('/api/acao', { origin: EVIL })
  t.same(corsHeaders(fromEvil), [], "the upstream's `*` cannot open the route to an unlisted origin")
  t.equal(varyOf(fromEvil), 'Accept-Encoding, Origin')

  t.equal(varyOf(await get('/api/vary-origin', { origin: APP })), 'accept, origin', 'Origin already there: not repeated')
  t.equal(varyOf(await get('/api/vary-star', { origin: APP })), '*', 'Vary: * already covers it')
})

t.test('routes[].cors: false leaves CORS to the upstream: preflights pass through', async (t) => {
  const seen = upstream.requests.length
  const pre = await preflight('/raw/thing', APP)
  t.equal(pre.status, 200, "the upstream's answer")
  const forwarded = upstream.requests.slice(seen)
  t.equal(forwarded.length, 1, 'the preflight reached the upstream')
  t.match(forwarded[0], { method: 'OPTIONS', url: '/raw/thing', headers: { origin: APP, 'access-control-request-method': 'PUT' } })
  t.match(pre.headers, { 'access-control-allow-origin': '*', 'access-control-expose-headers': 'x-secret', 'access-control-allow-methods': 'DELETE', vary: 'Accept-Encoding' },
    "the upstream's CORS headers, untouched")

  const res = await raw(gw.url, '/raw/thing', { headers: { origin: APP } })
  t.equal(res.headers['access-control-allow-origin'], '*', 'the upstream decides')
  t.equal(varyOf(res), 'Accept-Encoding', 'and the gateway adds nothing')

  // opted out AND protected: a preflight carries no token, so browsers cannot call it cross-origin
  const before = upstream.requests.length
  const protectedPre = await preflight('/rawreq/thing', APP)
  t.equal(protectedPre.status, 401)
  t.same(corsHeaders(protectedPre), [])
  t.equal(upstream.requests.length, before)
})

t.test('the auth endpoints: CORS answers, the CSRF rules still decide who may use the cookie', async (t) => {
  const pre = await preflight('/auth/refresh', PARTNER, 'POST')
  t.equal(pre.status, 204, 'a listed origin may ask')
  t.match(pre.headers, { 'access-control-allow-origin': PARTNER, 'access-control-allow-methods': 'POST', 'access-control-allow-credentials': 'true', vary: 'Origin' })
  const evil = await preflight('/auth/login', EVIL, 'POST')
  t.equal(evil.status, 403)
  t.equal(evil.json().code, 'cors_rejected')
  t.same(corsHeaders(evil), [])
  t.equal(varyOf(evil), 'Origin', 'Vary on the refusal too')

  const json = { 'content-type': 'application/json' }
  const login = await raw(gw.url, '/auth/login', { method: 'POST', headers: { ...json, origin: APP, 'sec-fetch-site': 'same-site' }, body: JSON.stringify({ username: 'alice', password: 'alice-password-1' }) })
  t.equal(login.status, 200)
  t.match(login.headers, { 'access-control-allow-origin': APP, 'access-control-allow-credentials': 'true', vary: 'Origin' })
  const setCookie = ([] as string[]).concat(login.headers['set-cookie'] ?? [])
  const cookie = setCookie.find((c) => c.startsWith(`${COOKIE}=`))?.split(';')[0] ?? ''
  t.ok(cookie !== '', 'the refresh cookie was set')

  // PARTNER may read answers (cors.origins) but is not trusted with the session (tokens.allowedOrigins)
  const partner = await raw(gw.url, '/auth/refresh', { method: 'POST', headers: { ...json, origin: PARTNER, 'sec-fetch-site': 'same-site', cookie }, body: '{}' })
  t.equal(partner.status, 403)
  t.equal(partner.json().code, 'csrf_origin', 'refused by the CSRF rules, CORS notwithstanding')
  t.equal(partner.headers['access-control-allow-origin'], PARTNER, 'with CORS headers, so its script can read why')
  t.equal(partner.headers['set-cookie'], undefined, 'no cookie touched')
  const partnerLogin = await raw(gw.url, '/auth/login', { method: 'POST', headers: { ...json, origin: PARTNER }, body: JSON.stringify({ username: 'alice', password: 'alice-password-1' }) })
  t.equal(partnerLogin.status, 403)
  t.equal(partnerLogin.json().code, 'csrf_origin', 'nor may it log in')

  const refreshed = await raw(gw.url, '/auth/refresh', { method: 'POST', headers: { ...json, origin: APP, 'sec-fetch-site': 'same-site', cookie }, body: '{}' })
  t.equal(refreshed.status, 200, 'the refused request consumed nothing: the app refreshes with the same cookie')
  t.equal(refreshed.headers['access-control-allow-origin'], APP)

  const wrongMethod = await raw(gw.url, '/auth/refresh', { headers: { origin: APP } })
  t.equal(wrongMethod.status, 405)
  t.equal(varyOf(wrongMethod), 'Origin')
})
