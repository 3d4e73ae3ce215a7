import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { createServer as createTcpServer, connect, type Server as TcpServer } from 'node:net'
import { join, resolve } from 'node:path'
import { writeFileSync } from 'node:fs'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { explainRequest, offlineRuntime, type Explanation, type ExplainRequest } from '../../src/explain/explain.js'
import { explainCommand, formatExplanation } from '../../src/explain/format.js'
import { LENGTH_ONCE_READ } from '../../src/explain/request.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { publicJwk, startJwksServer } from '../tokens/issuers/helpers.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// `portcullis explain` walks the gateway's own stages offline. Every case here that can be
// sent for real is also sent to a real gateway with the same configuration, and explain must
// give the same status and code — or, when granted, the same upstream URL and headers.

const ROOT = resolve(import.meta.dirname, '..', '..')
// each run starts node + tsx (~3 s of CPU); more at once only queue on a 2-core machine
const CLI_CONCURRENCY = 3
const IDP_ISSUER = 'https://idp.test'

const key = makeKey('EdDSA')
const otherKey = makeKey('EdDSA')
const idpKey = makeKey('RS256', 'idp-1')
const nowSec = (): number => Math.floor(Date.now() / 1000)

function gatewayConfig (upstreamUrl: string, jwksUri: string, extraIssuers: unknown[] = []): Record<string, any> {
  const config = baseConfig(key, [
    {
      name: 'orders',
      prefix: '/api/orders',
      upstream: upstreamUrl,
      rewritePrefix: '/orders',
      auth: 'required',
      issuers: ['self'],
      scopes: { GET: ['orders:read'], '*': { anyOf: ['orders:write', 'admin'] } },
      assertion: { audience: 'orders-svc' },
      maxBodyBytes: 1000,
    },
    { name: 'catalog', prefix: '/api/catalog', upstream: upstreamUrl, methods: ['GET', 'HEAD'], auth: 'optional', cors: false },
    { name: 'health', prefix: '/health', upstream: upstreamUrl, auth: 'public' },
    { name: 'partner', prefix: '/api/partner', upstream: upstreamUrl, auth: 'required', issuers: ['corp'], scopes: { '*': ['partner'] } },
  ], {
    identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes' }, assertion: { header: 'x-portcullis-assertion' } },
  })
  config.issuers = [{ name: 'corp', issuer: IDP_ISSUER, jwksUri, audiences: ['api.test'], algorithms: ['RS256'] }, ...extraIssuers]
  config.cors = { origins: ['https://app.test'] }
  return config
}

interface Run { code: number | null, stdout: string, stderr: string }

function cli (...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout, stderr })
    })
  })
}

/** runs CLI invocations, CLI_CONCURRENCY at a time, results in order */
async function cliAll (runs: string[][]): Promise<Run[]> {
  const results: Run[] = new Array<Run>(runs.length)
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < runs.length) {
      const i = next++
      results[i] = await cli(...(runs[i] as string[]))
    }
  }
  await Promise.all(Array.from({ length: CLI_CONCURRENCY }, worker))
  return results
}

/** explain with a Runtime compiled from the config object, as `portcullis explain` compiles it */
async function explainer (t: { teardown: (fn: () => unknown) => void }, configObject: Record<string, any>): Promise<(req: ExplainRequest, nowMs?: number) => Promise<Explanation>> {
  const config = loadConfigText(stringify(configObject), { env: {} })
  const { runtime, close } = offlineRuntime(config)
  t.teardown(close)
  return async (req, nowMs = Date.now()) => await explainRequest(runtime, req, nowMs)
}

const tokens = {
  read: signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' })),
  admin: signWith(key, goodClaims({ sub: 'root', scope: 'admin' })),
  expired: signWith(key, goodClaims({ iat: nowSec() - 1200, exp: nowSec() - 600 })),
  forged: signWith(otherKey, goodClaims()),
  idp: signWith(idpKey, { iss: IDP_ISSUER, aud: 'api.test', sub: 'bob', iat: nowSec(), exp: nowSec() + 300, scope: 'partner' }),
  // what the verifier refuses whoever signed it, and what cannot fit beside an assertion
  // (fix-explain-claims-unchecked: explain decided on decoded or given claims without either)
  idpLoneSurrogate: signWith(idpKey, { iss: IDP_ISSUER, aud: 'api.test', sub: 'bob\ud800', iat: nowSec(), exp: nowSec() + 300, scope: 'partner' }),
  idpUnsafeInteger: signWith(idpKey, { iss: IDP_ISSUER, aud: 'api.test', sub: 'bob', account: 2 ** 60, iat: nowSec(), exp: nowSec() + 300, scope: 'partner' }),
  idpControlJti: signWith(idpKey, { iss: IDP_ISSUER, aud: 'api.test', sub: 'bob', jti: 'j\u0000', iat: nowSec(), exp: nowSec() + 300, scope: 'partner' }),
  overBudget: signWith(key, goodClaims({ sub: 'a'.repeat(5000), scope: 'orders:read' })),
}

/** a real gateway (with its upstream and the IdP's JWKS) and `explain` over the same configuration */
async function realAndExplained (t: Test): Promise<{ upstream: Awaited<ReturnType<typeof startUpstream>>, gw: Awaited<ReturnType<typeof startGateway>>, explain: Awaited<ReturnType<typeof explainer>> }> {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  jwks.jwks = { keys: [publicJwk({ privateKey: idpKey.privateKey!, publicKey: idpKey.publicKey! }, { kid: 'idp-1', alg: 'RS256', use: 'sig' })] }
  const configObject = gatewayConfig(upstream.url, jwks.jwksUrl)
  const gw = await startGateway(t, configObject)
  const explain = await explainer(t, configObject)
  return { upstream, gw, explain }
}

t.test('refusals: the same status and code as a real gateway, for every reason', async (t) => {
  const { upstream, gw, explain } = await realAndExplained(t)

  interface Row {
    name: string
    method?: string
    path: string
    headers?: Array<[string, string]>
    token?: string
    claims?: Record<string, unknown>
    body?: string
    status: number
    reason: string
    scope?: string
    allow?: string
    /** false: cannot be sent for real (given claims; the auth endpoints need a store) */
    wire?: boolean
  }
  const rows: Row[] = [
    { name: 'no token', path: '/api/orders/1', status: 401, reason: 'missing_token' },
    { name: 'expired token', path: '/api/orders/1', token: tokens.expired, status: 401, reason: 'token_expired' },
    { name: 'forged token', path: '/api/orders/1', token: tokens.forged, status: 401, reason: 'token_invalid_signature' },
    { name: 'scope missing for POST ("*" rule)', method: 'POST', path: '/api/orders', token: tokens.read, status: 403, reason: 'insufficient_scope', scope: 'orders:write admin' },
    { name: 'method not allowed', method: 'DELETE', path: '/api/catalog/1', status: 405, reason: 'method_not_allowed', allow: 'GET, HEAD' },
    { name: 'token in the query', path: '/api/orders/1?access_token=abc', token: tokens.read, status: 400, reason: 'token_in_query' },
    { name: 'no route', path: '/api/ordrs/1', status: 404, reason: 'route_not_found' },
    { name: 'encoded dot segment', path: '/api/orders/%2e%2e/admin', status: 400, reason: 'path_rejected' },
    { name: 'bad Host', path: '/health', headers: [['Host', 'bad host']], status: 400, reason: 'bad_host' },
    { name: 'two Authorization headers', path: '/api/orders/1', headers: [['Authorization', `Bearer ${tokens.read}`], ['Authorization', `Bearer ${tokens.admin}`]], status: 400, reason: 'duplicate_header' },
    { name: 'Bearer without a token', path: '/api/orders/1', headers: [['Authorization', 'Bearer']], status: 400, reason: 'malformed_authorization' },
    { name: 'own token on an identity-provider route', path: '/api/partner/x', token: tokens.read, status: 401, reason: 'token_issuer_not_allowed' },
    { name: 'Transfer-Encoding other than chunked', method: 'POST', path: '/health', headers: [['Transfer-Encoding', 'gzip, chunked']], body: 'x', status: 501, reason: 'unsupported_transfer_encoding' },
    { name: 'declared body over maxBodyBytes', method: 'POST', path: '/api/orders', token: tokens.admin, headers: [['Content-Type', 'text/plain'], ['Content-Length', '5000']], body: 'x'.repeat(5000), status: 413, reason: 'payload_too_large' },
    { name: 'WebSocket upgrade on a plain route', path: '/health', headers: [['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==']], status: 400, reason: 'bad_request' },
    { name: 'preflight from an origin not listed', method: 'OPTIONS', path: '/api/orders', headers: [['Origin', 'https://evil.test'], ['Access-Control-Request-Method', 'GET']], status: 403, reason: 'cors_rejected' },
    { name: 'claims: unknown issuer', path: '/api/orders/1', claims: { iss: 'https://evil.test', scope: 'orders:read' }, status: 401, reason: 'token_invalid_issuer', wire: false },
    { name: 'claims: not yet valid', path: '/api/orders/1', claims: { scope: 'orders:read', nbf: nowSec() + 3600 }, status: 401, reason: 'token_not_yet_valid', wire: false },
    { name: 'claims: expired', path: '/api/orders/1', claims: { scope: 'orders:read', exp: nowSec() - 3600 }, status: 401, reason: 'token_expired', wire: false },
    { name: 'claims: HEAD takes GET\'s rule', method: 'HEAD', path: '/api/orders/1', claims: { scope: 'orders:write' }, status: 403, reason: 'insufficient_scope', scope: 'orders:read', wire: false },
    { name: 'claims: identity provider, scope missing', path: '/api/partner/1', claims: { iss: IDP_ISSUER, sub: 'bob', scope: 'other' }, status: 403, reason: 'insufficient_scope', scope: 'partner', wire: false },
    { name: 'IdP token: a lone surrogate in sub (signature not checked offline)', path: '/api/partner/1', token: tokens.idpLoneSurrogate, status: 401, reason: 'token_invalid_claim' },
    { name: 'IdP token: an integer past 2^53', path: '/api/partner/1', token: tokens.idpUnsafeInteger, status: 401, reason: 'token_invalid_claim' },
    { name: 'IdP token: a control character in jti', path: '/api/partner/1', token: tokens.idpControlJti, status: 401, reason: 'token_invalid_claim' },
    { name: 'a sub too large to fit beside the route\'s assertion', path: '/api/orders/1', token: tokens.overBudget, status: 401, reason: 'token_invalid_claim' },
    { name: 'claims: a lone surrogate in sub', path: '/api/orders/1', claims: { sub: 'alice\udbff', scope: 'orders:read' }, status: 401, reason: 'token_invalid_claim', wire: false },
    { name: 'claims: an integer past 2^53', path: '/api/orders/1', claims: { sub: 'alice', scope: 'orders:read', account: { id: 2 ** 60 } }, status: 401, reason: 'token_invalid_claim', wire: false },
    { name: 'claims: a control character in sid', path: '/api/orders/1', claims: { sub: 'alice', sid: 's\n', scope: 'orders:read' }, status: 401, reason: 'token_invalid_claim', wire: false },
    { name: 'claims: a sub too large to fit beside the route\'s assertion', path: '/api/orders/1', claims: { sub: 'a'.repeat(5000), scope: 'orders:read' }, status: 401, reason: 'token_invalid_claim', wire: false },
    { name: 'an auth endpoint with GET', path: '/auth/login', status: 405, reason: 'method_not_allowed', allow: 'POST', wire: false },
    // methods the gateway never forwards (fix-unknown-method-over-h2): explain refused them as a usage error
    { name: 'PROPFIND on a route', method: 'PROPFIND', path: '/api/catalog/1', status: 405, reason: 'method_not_allowed', allow: 'GET, HEAD' },
    { name: 'TRACE on a route with every method', method: 'TRACE', path: '/api/orders/1', token: tokens.admin, status: 405, reason: 'method_not_allowed', allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS' },
    { name: 'PURGE where no route matches', method: 'PURGE', path: '/api/ordrs/1', status: 404, reason: 'route_not_found' },
    { name: 'a method Node\'s HTTP/1.1 parser refuses', method: 'FETCH', path: '/api/orders/1', status: 400, reason: 'bad_request' },
    { name: 'PROPFIND on an auth endpoint', method: 'PROPFIND', path: '/auth/logout', status: 405, reason: 'method_not_allowed', allow: 'POST', wire: false },
    { name: 'CONNECT', method: 'CONNECT', path: '/api/orders/1', status: 405, reason: 'method_not_allowed', allow: '', wire: false },
  ]

  for (const row of rows) {
    const method = row.method ?? 'GET'
    const ex = await explain({ method, url: gw.url + row.path, headers: row.headers ?? [], token: row.token, claims: row.claims, peerAddress: '127.0.0.1' })
    t.equal(ex.decision.outcome, 'refused', `${row.name}: refused`)
    t.equal(ex.decision.status, row.status, `${row.name}: status ${row.status}`)
    t.equal(ex.decision.reason, row.reason, `${row.name}: reason ${row.reason}`)
    if (row.scope !== undefined) t.equal(ex.decision.scope, row.scope, `${row.name}: the scopes needed`)
    if (row.allow !== undefined) t.equal(ex.decision.allow, row.allow, `${row.name}: Allow`)
    t.equal(ex.upstream, undefined, `${row.name}: nothing would be sent upstream`)
    t.doesNotThrow(() => formatExplanation(ex), `${row.name}: renders as text`)

    if (row.wire === false) continue
    const headers: Array<[string, string]> = [...(row.headers ?? [])]
    if (row.token !== undefined) headers.push(['Authorization', `Bearer ${row.token}`])
    const before = upstream.requests.length
    const res = await raw(gw.url, row.path, { method, headers, body: row.body })
    t.equal(res.status, row.status, `${row.name}: the real gateway answers ${row.status} too`)
    if (method !== 'HEAD') t.equal(res.json().code, row.reason, `${row.name}: with the same code`)
    t.equal(upstream.requests.length, before, `${row.name}: and sends nothing upstream`)
  }

  const noRoute = await explain({ method: 'GET', url: '/api/ordrs/1', headers: [] })
  t.same(noRoute.closest?.[0], { name: 'orders', prefix: '/api/orders' }, 'no route: the closest prefix is named')
  t.equal(noRoute.route, undefined)
  t.match(formatExplanation(noRoute), /route\s+none: no route prefix matches \/api\/ordrs\/1\n\s+closest: \/api\/orders \(orders\)/)

  const expired = await explain({ method: 'GET', url: '/api/orders/1', headers: [], token: tokens.expired })
  t.equal(expired.credentials?.check, 'invalid', 'an expired --token: refused by the verifier')
  t.ok(expired.credentials?.expiresAt !== undefined && Date.parse(expired.credentials.expiresAt) < Date.now(), 'and its exp is shown')
})

t.test('granted: the exact upstream URL and headers a real gateway sends', async (t) => {
  const { upstream, gw, explain } = await realAndExplained(t)
  const spoof: Array<[string, string]> = [
    ['X-User-Id', 'mallory'], ['x-portcullis-assertion', 'forged'], ['X-Forwarded-For', '6.6.6.6'], ['X-Http-Method-Override', 'DELETE'],
    ['Cookie', 'theme=dark; __Host-portcullis-rt=refresh-secret'], ['TE', 'trailers'], ['Accept', 'application/json'], ['X-Custom', 'kept'],
  ]

  const rows: Array<{ name: string, method?: string, path: string, token?: string, headers?: Array<[string, string]>, body?: string, url: string, reason: string }> = [
    { name: 'own token, scope by GET rule, assertion', path: '/api/orders/42?x=1&y=%20z', token: tokens.read, headers: spoof, url: '/orders/42?x=1&y=%20z', reason: 'granted' },
    { name: 'own token, POST with a body', method: 'POST', path: '/api/orders', token: tokens.admin, headers: [['Content-Type', 'application/json'], ['Content-Length', '7'], ['X-Request-Id', 'req-123']], body: '{"a":1}', url: '/orders', reason: 'granted' },
    { name: 'public route, chunked body', method: 'PUT', path: '/health/upload', headers: [['Transfer-Encoding', 'chunked']], body: 'abc', url: '/health/upload', reason: 'public' },
    { name: 'public route, POST without a body', method: 'POST', path: '/health/ping', url: '/health/ping', reason: 'public' },
    { name: 'optional route, anonymous', path: '/api/catalog/shoes', headers: spoof, url: '/api/catalog/shoes', reason: 'anonymous' },
    { name: 'optional route, HEAD with a token', method: 'HEAD', path: '/api/catalog/x', token: tokens.read, url: '/api/catalog/x', reason: 'granted' },
    { name: 'public route', path: '/health/deep', token: tokens.forged, headers: spoof, url: '/health/deep', reason: 'public' },
    { name: 'identity provider token (keys fetched by the real gateway only)', path: '/api/partner/7', token: tokens.idp, url: '/api/partner/7', reason: 'granted' },
  ]
  for (const row of rows) {
    const method = row.method ?? 'GET'
    const ex = await explain({ method, url: gw.url + row.path, headers: row.headers ?? [], token: row.token, peerAddress: '127.0.0.1' })
    t.equal(ex.decision.outcome, 'proxied', `${row.name}: proxied`)
    t.equal(ex.decision.reason, row.reason, `${row.name}: reason ${row.reason}`)
    t.equal(ex.upstream?.url, upstream.url + row.url, `${row.name}: the upstream URL`)

    const sent: Array<[string, string]> = [...(row.headers ?? [])]
    if (row.token !== undefined) sent.push(['Authorization', `Bearer ${row.token}`])
    upstream.requests.length = 0
    const res = await raw(gw.url, row.path, { method, headers: sent, body: row.body })
    t.equal(res.status, 200, `${row.name}: the real gateway proxies it`)
    const got = upstream.requests[0]!
    t.equal(upstream.url + got.url, ex.upstream?.url, `${row.name}: to the same URL`)
    t.equal(got.method, ex.upstream?.method, `${row.name}: with the same method`)

    const predicted = Object.fromEntries(ex.upstream!.headers)
    const real: Record<string, unknown> = { ...got.headers }
    // a chunked body on a route that reads bodies whole goes with its length, which explain (given no body) names
    if (predicted['content-length'] === LENGTH_ONCE_READ) {
      t.equal(real['content-length'], String(Buffer.byteLength(row.body ?? '')), `${row.name}: sent with the length of the body read whole`)
      predicted['content-length'] = real['content-length'] as string
    }
    t.same(Object.keys(predicted).sort(), Object.keys(real).sort(), `${row.name}: the same header names`)
    if (row.headers?.some(([n]) => n === 'X-Request-Id') === true) t.equal(predicted['x-request-id'], real['x-request-id'], `${row.name}: the client's request id`)
    else t.equal(predicted['x-request-id'], '<generated per request>', `${row.name}: a request id is generated`)
    const assertion = real['x-portcullis-assertion']
    if (assertion !== undefined) {
      t.equal(predicted['x-portcullis-assertion'], `<signed assertion, aud=orders-svc, ${String(assertion).length} bytes>`, `${row.name}: the assertion's size, not its signature`)
      const payload = JSON.parse(Buffer.from(String(assertion).split('.')[1]!, 'base64url').toString())
      t.equal(payload.aud, 'orders-svc', `${row.name}: the real assertion has that aud`)
    }
    for (const h of ['x-request-id', 'x-portcullis-assertion']) { delete predicted[h]; delete real[h] }
    // explain prints cookie names, never values (fix-explain-prints-credentials)
    if (typeof real.cookie === 'string') real.cookie = real.cookie.replace(/=[^;]*/g, '=<redacted>')
    t.same(predicted, real, `${row.name}: the same header values (x-forwarded-for included: same peer)`)
  }

  const idp = await explain({ method: 'GET', url: '/api/partner/7', headers: [], token: tokens.idp })
  t.equal(idp.credentials?.check, 'unverified', 'an identity provider\'s token: its signature is not checked offline')
  t.match(idp.credentials?.note, /signature not checked: the keys of issuer "corp"/)
  t.equal(idp.credentials?.sub, 'bob', 'decided on its decoded claims')
})

t.test('--claims, preflights, the gateway\'s endpoints, redaction', async (t) => {
  const explain = await explainer(t, gatewayConfig('http://127.0.0.1:9', 'http://127.0.0.1:9/jwks'))

  const claims = await explain({ method: 'GET', url: 'https://api.test/api/orders/1', headers: [], claims: { sub: 'carol', scope: 'orders:read' } })
  t.equal(claims.decision.outcome, 'proxied', 'claims that satisfy the rule: proxied')
  t.equal(claims.credentials?.check, 'claims-given')
  t.match(claims.credentials?.note, /claims given, signature not checked/)
  t.same(claims.request.headers.find(([n]) => n === 'Host'), ['Host', 'api.test'], 'Host from the absolute URL')
  const up = Object.fromEntries(claims.upstream!.headers)
  t.equal(up['x-user-id'], 'carol', 'identity headers from the claims')
  t.equal(up['x-forwarded-host'], 'api.test')
  t.equal(up.host, '127.0.0.1:9', 'the upstream\'s own Host')

  const relative = await explain({ method: 'GET', url: '/health', headers: [] })
  t.same(relative.request.headers[0], ['Host', 'localhost'], 'a relative URL: Host localhost')

  const external = await explain({ method: 'GET', url: '/api/partner/1', headers: [], claims: { iss: IDP_ISSUER, sub: 'bob', scope: 'partner' } })
  t.equal(external.decision.reason, 'granted', 'claims of a configured issuer, chosen by iss')
  t.equal(external.credentials?.issuer, 'corp')
  t.notOk(external.upstream?.headers.some(([n]) => n === 'x-portcullis-assertion'), 'no assertion on a route without one')
  const asserted = await explain({ method: 'GET', url: '/api/orders/1', headers: [], claims: { sub: 'carol', scope: 'orders:read' } })
  t.match(Object.fromEntries(asserted.upstream!.headers)['x-portcullis-assertion'], /^<signed assertion, aud=orders-svc, \d+ bytes>$/, 'the assertion: signed offline, its size shown, never its value')

  // a token without sub has no subject, as the verifier has it (fix-subless-token-one-identity)
  const subless = await explain({ method: 'GET', url: '/api/partner/1', headers: [], claims: { iss: IDP_ISSUER, scope: 'partner' } })
  t.equal(subless.decision.outcome, 'proxied', 'claims without sub: proxied')
  t.equal(subless.credentials?.sub, undefined, 'with no subject')
  t.notOk(subless.upstream?.headers.some(([n]) => n === 'x-user-id'), 'and no x-user-id')
  t.match(formatExplanation(subless), /token\s+claims-given: issuer corp, sub \(none\)/, 'shown as sub (none)')

  const preflight = await explain({ method: 'OPTIONS', url: '/api/orders', headers: [['Origin', 'https://app.test'], ['Access-Control-Request-Method', 'POST']] })
  t.equal(preflight.decision.outcome, 'answered', 'a preflight is answered by the gateway')
  t.equal(preflight.decision.status, 204)
  t.equal(preflight.rule?.cors, true)

  const login = await explain({ method: 'POST', url: '/auth/login', headers: [] })
  t.equal(login.decision.outcome, 'gateway', '/auth/login: the gateway\'s own endpoint')
  t.same(login.endpoint, { path: '/auth/login', name: 'auth.login' })
  t.equal(login.route, undefined, 'not a route')
  const jwksEndpoint = await explain({ method: 'GET', url: '/.well-known/jwks.json', headers: [] })
  t.equal(jwksEndpoint.endpoint?.name, 'jwks')

  const secret = await explain({ method: 'GET', url: '/api/orders/1', headers: [['Cookie', '__Host-portcullis-rt=refresh-secret; a=1'], ['X-Debug', `token=${tokens.admin}`]], token: tokens.read })
  const text = formatExplanation(secret) + JSON.stringify(secret)
  for (const s of [tokens.read, tokens.admin, 'refresh-secret']) t.notOk(text.includes(s), `never printed: ${s.slice(0, 12)}…`)
  t.match(text, /Authorization: Bearer <redacted>/)
  t.match(text, /__Host-portcullis-rt=<redacted>/)
  t.match(text, /X-Debug: token=<redacted token>/)

  const forwardingConfig = gatewayConfig('http://127.0.0.1:9', 'http://127.0.0.1:9/jwks')
  forwardingConfig.identity = { ...forwardingConfig.identity, forwardAuthorization: true, forwardRefreshCookie: true }
  const forwarding = await explainer(t, forwardingConfig)
  const fwd = await forwarding({ method: 'GET', url: '/api/orders/1', headers: [['Cookie', '__Host-portcullis-rt=refresh-secret; a=1']], token: tokens.read })
  const fwdUp = Object.fromEntries(fwd.upstream!.headers)
  t.equal(fwdUp.authorization, 'Bearer <redacted>', 'a forwarded Authorization is shown redacted')
  t.equal(fwdUp.cookie, '__Host-portcullis-rt=<redacted>; a=<redacted>', 'a forwarded refresh cookie is shown redacted, as every cookie value is')
})

/** a TCP listener that counts every connection made to it */
async function trap (): Promise<{ port: number, connections: () => number, server: TcpServer }> {
  let n = 0
  const server = createTcpServer((socket) => { n++; socket.destroy() })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as { port: number }).port, connections: () => n, server }
}

t.test('no network at all: upstreams and identity providers on a listener that sees zero connections', async (t) => {
  const listener = await trap()
  t.teardown(() => new Promise<void>(resolve => listener.server.close(() => resolve())))
  const origin = `http://127.0.0.1:${listener.port}`
  const configObject = gatewayConfig(origin, `${origin}/jwks`, [
    { name: 'discovered', issuer: `${origin}/realm`, discovery: true, audiences: ['api.test'], algorithms: ['RS256'] },
  ])
  const file = join(t.testdir({}), 'gateway.yaml')
  writeFileSync(file, stringify(configObject))

  // an identity provider's token whose kid nobody knows: the gateway would fetch its keys
  const unknownKid = signWith(idpKey, { iss: IDP_ISSUER, aud: 'api.test', sub: 'bob', iat: nowSec(), exp: nowSec() + 300, scope: 'partner' }, { kid: 'never-seen' })
  const discovered = signWith(idpKey, { iss: `${origin}/realm`, aud: 'api.test', sub: 'eve', iat: nowSec(), exp: nowSec() + 300 })
  const runs = await cliAll([
    ['explain', '-c', file, 'GET', `${origin}/api/partner/1`, '--token', unknownKid],
    ['explain', '-c', file, 'GET', '/api/orders/1', '--claims', '{"sub":"a","scope":"orders:read"}'],
    ['explain', '-c', file, 'POST', '/api/orders/1', '--token', tokens.admin, '--json'],
    ['explain', '-c', file, 'GET', '/health', '--token', discovered],
  ])
  for (const [i, run] of runs.entries()) t.equal(run.code, 0, `run ${i}: proxied (stderr: ${run.stderr})`)
  t.match(runs[0]!.stdout, /unverified/, 'the unknown kid is not fetched: the token is decoded only')
  t.match(runs[0]!.stdout, new RegExp(`upstream\\s+GET ${origin}/api/partner/1`))

  const explain = await explainer(t, configObject)
  for (const token of [unknownKid, discovered, tokens.read]) await explain({ method: 'GET', url: '/api/partner/1', headers: [], token })

  // connections are accepted in order: once this probe is in, any earlier one has been counted
  await new Promise<void>((resolve, reject) => {
    const probe = connect(listener.port, '127.0.0.1')
    probe.on('error', reject)
    probe.on('close', () => resolve())
  })
  t.equal(listener.connections(), 1, 'the only connection the listener ever saw is the test\'s own probe')
})

t.test('the command: text, --json, exit codes 0, 1, 2', async (t) => {
  const dir = t.testdir({ 'gateway.yaml': stringify(gatewayConfig('http://127.0.0.1:4001', 'http://127.0.0.1:9/jwks')), 'bad.yaml': 'routes: [' })
  const file = join(dir, 'gateway.yaml')
  const [granted, refused, expired, json, noUrl, badConfig] = await cliAll([
    ['explain', '-c', file, 'GET', 'http://api.test/api/orders/42?x=1', '--token', tokens.read, '-H', 'X-User-Id: mallory'],
    ['explain', '-c', file, 'GET', '/api/orders/42'],
    ['explain', '-c', file, 'GET', '/api/orders/42', '--token', tokens.expired],
    ['explain', '-c', file, 'POST', '/api/orders', '--claims', '{"scope":"orders:read"}', '--json'],
    ['explain', '-c', file, 'GET'],
    ['explain', '-c', join(dir, 'bad.yaml'), 'GET', '/x'],
  ]) as [Run, Run, Run, Run, Run, Run]
  t.equal(granted.code, 0, `granted: exit 0 (stderr: ${granted.stderr})`)
  t.match(granted.stdout, /^request\s+GET \/api\/orders\/42\?x=1\n\s+Host: api\.test\n/, 'the request as sent')
  t.match(granted.stdout, /\nroute\s+orders: prefix \/api\/orders → http:\/\/127\.0\.0\.1:4001\/orders\n/)
  t.match(granted.stdout, /\nrule\s+auth required; methods all; GET needs orders:read \(GET's own rule\); issuers self; CORS on; assertion for orders-svc\n/)
  t.match(granted.stdout, /\ntoken\s+verified: issuer self, sub alice, scopes orders:read, expires /)
  t.match(granted.stdout, /\ndecision\s+proxied \(granted/)
  t.match(granted.stdout, /\nupstream\s+GET http:\/\/127\.0\.0\.1:4001\/orders\/42\?x=1\n/)
  t.match(granted.stdout, /\n\s+x-user-id: alice\n/, 'the identity from the token, not the client\'s copy')
  t.match(granted.stdout, /\n\s+x-portcullis-assertion: <signed assertion, aud=orders-svc, \d+ bytes>\n/)
  t.notOk(granted.stdout.includes(tokens.read), 'the token is never printed')

  t.equal(refused.code, 1, 'refused: exit 1')
  t.match(refused.stdout, /decision\s+refused 401 missing_token/)
  t.equal(expired.code, 1, 'an expired --token: exit 1')
  t.match(expired.stdout, /decision\s+refused 401 token_expired/)
  t.match(expired.stdout, /token\s+invalid: sub alice, expires /)

  t.equal(json.code, 1, '--json: exit 1 for a refusal too')
  const parsed = JSON.parse(json.stdout) as Explanation
  t.equal(parsed.decision.reason, 'insufficient_scope')
  t.equal(parsed.decision.scope, 'orders:write admin')
  t.equal(parsed.rule?.scope.from, '*', 'POST falls to the "*" rule')

  for (const run of [noUrl, badConfig]) {
    t.equal(run.code, 2, `usage or configuration problem: exit 2 (${run.stderr.split('\n')[0]})`)
    t.equal(run.stdout, '', 'nothing on stdout')
  }
  t.match(noUrl.stderr, /METHOD and URL are required\nusage: portcullis explain/)
  t.match(badConfig.stderr, /refusing to start/)

  // the other usage errors, in this process (each is refused before the config is read)
  const rows: Array<[args: string[], stderr: RegExp]> = [
    [['GET', '/x', '--token', 'a', '--claims', '{}'], /--token or --claims, not both/],
    [['GET', '/x', '--claims', '[1]'], /--claims must be a JSON object/],
    [['GET', '/x', '--claims', '{'], /--claims must be a JSON object/],
    [['GET', '/x', '-H', 'no-colon'], /expected "name: value"/],
    [['GE T', '/x'], /METHOD must be an HTTP method such as GET, HEAD/],
    [['GET', '/x', '--token', 'a', '-H', 'authorization: Basic x'], /do not give it with -H too/],
    [['GET', '/x', '--frobnicate'], /Unknown option/],
  ]
  // any method a client can send is explained (it was a usage error outside the seven)
  const propfind = await captured(async () => await explainCommand(['-c', file, 'PROPFIND', '/api/catalog/1']))
  t.equal(propfind.result, 1, 'PROPFIND: refused, exit 1')
  t.match(propfind.stdout, /decision\s+refused 405 method_not_allowed: PROPFIND is not a method this gateway forwards\n\s+Allow: GET, HEAD\n/)
  t.match(propfind.stdout, /PROPFIND needs no token satisfies it \(the gateway never forwards this method\)/)
  const fetch = await captured(async () => await explainCommand(['-c', file, 'fetch', '/api/orders/1']))
  t.equal(fetch.result, 1, 'FETCH: refused, exit 1')
  t.match(fetch.stdout, /decision\s+refused 400 bad_request/)
  t.match(fetch.stdout, /over HTTP\/2, which carries any token as a method, it would be refused/)
  for (const [args, stderr] of rows) {
    const out = await captured(async () => await explainCommand(['-c', file, ...args]))
    t.equal(out.result, 2, `${args.join(' ')}: exit 2`)
    t.match(out.stderr, stderr, `${args.join(' ')}: says why`)
    t.equal(out.stdout, '', `${args.join(' ')}: nothing on stdout`)
  }
})

/** runs a command function with process.stdout/stderr writes collected (output capture, not a fault) */
async function captured<T> (fn: () => Promise<T>): Promise<{ result: T, stdout: string, stderr: string }> {
  const out = { stdout: '', stderr: '' }
  const original = { stdout: process.stdout.write, stderr: process.stderr.write }
  process.stdout.write = ((chunk: string) => { out.stdout += chunk; return true }) as typeof process.stdout.write
  process.stderr.write = ((chunk: string) => { out.stderr += chunk; return true }) as typeof process.stderr.write
  try {
    return { result: await fn(), ...out }
  } finally {
    process.stdout.write = original.stdout
    process.stderr.write = original.stderr
  }
}
