import t, { type Test } from 'tap'
import type { Socket } from 'node:net'
import { startUpstream, type Recorded } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { RawClient, rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { startRawUpstream } from '../fixtures/raw-upstream.js'

// The checklists in the header comments of src/pipeline/headers.ts (request rules R1–R11)
// and src/proxy/response-headers.ts (response rules S1–S9), one subtest per rule, plus the
// hard-won fixes of reply-from, nginx and Envoy that live below them (A*): request framing
// Node's parser refuses, and what a hostile or broken upstream can send back. Deeper
// regression tests per cause are in test/e2e/fix-*.test.ts.

const key = makeKey('EdDSA')
const NAME = '__Host-portcullis-rt'
/** S14: what an upstream under /inner sets → what the client gets on the route /m → /inner (undefined: dropped) */
const COOKIES_SENT: Array<[sent: string, scoped: string | undefined]> = [
  ['a=1', 'a=1; Path=/m'],
  ['b=2; Path=/', 'b=2; Path=/m'],
  ['c=3; Path=/inner/cart; HttpOnly', 'c=3; HttpOnly; Path=/m/cart'],
  ['d=4; Path=/innerx', 'd=4; Path=/m'],
  ['e=5; Path=/other; path=/inner/x', 'e=5; Path=/m/x'],
  ['f=6; Domain=127.0.0.1; Secure; SameSite=Lax', 'f=6; Secure; SameSite=Lax; Path=/m'],
  ['g=7; Path=relative', 'g=7; Path=/m'],
  ['__Host-h=8; Path=/; Secure', undefined],
  ['__HOST-i=9; Path=/; Secure', undefined],
  ['__Secure-j=10; Secure', '__Secure-j=10; Secure; Path=/m'],
]

function count (rawHeaders: string[], name: string): number {
  let n = 0
  for (let i = 0; i < rawHeaders.length; i += 2) if (rawHeaders[i]!.toLowerCase() === name) n++
  return n
}

function namesOf (rec: Recorded): string[] {
  return rec.rawHeaders.filter((_h, i) => i % 2 === 0).map(h => h.toLowerCase())
}

/** an upstream that records requests and answers 200 JSON */
async function recording (t: Test): Promise<Awaited<ReturnType<typeof startUpstream>>> {
  const up = await startUpstream()
  t.teardown(() => up.close())
  return up
}

/**
 * An upstream that answers each request (kept-alive connections included) with raw bytes
 * chosen by its path: what Node's own server would refuse to write. Counts connections.
 */
async function scripted (t: Test, answer: (path: string, method: string) => string | ((socket: Socket) => void)): Promise<{ url: string, connections: () => number, paths: string[] }> {
  const paths: string[] = []
  const up = await startRawUpstream(t, (req, socket) => {
    paths.push(req.path)
    const a = answer(req.path, req.method)
    if (typeof a === 'function') a(socket)
    else socket.write(Buffer.from(a, 'latin1'))
  })
  return { url: up.url, connections: up.connections, paths }
}

t.test('request rules (src/pipeline/headers.ts)', async (t) => {
  const up = await recording(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: up.url, auth: 'public' },
    { name: 'streamed', prefix: '/streamed', upstream: up.url, auth: 'public', requestBuffering: false },
  ], { identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes', tenant: 'x-tenant' } } }))
  const bearer = `Bearer ${signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' }))}`
  const send = async (headers: Array<[string, string]>, path = '/api/x', method = 'GET', body = ''): Promise<Recorded> => {
    const before = up.requests.length
    const all: Array<[string, string]> = [['Host', 'client.example'], ...headers]
    if (path.startsWith('/api') && !headers.some(([n]) => n.toLowerCase() === 'authorization')) all.push(['Authorization', bearer])
    if (body !== '') all.push(['Content-Length', String(body.length)])
    const res = await rawRequest(gw.url, requestBytes(method, path, all, body))
    if (res.status !== 200) throw new Error(`expected 200, got ${res.status} ${res.body.toString()}`)
    const rec = up.requests[before]
    if (rec === undefined) throw new Error('not proxied')
    return rec
  }

  t.test('R1: hop-by-hop headers and whatever Connection names are removed; Connection cannot remove what the gateway sets', async (t) => {
    const rec = await send([
      ['Connection', 'keep-alive, X-Secret, X-User-Id, X-Forwarded-For, X-Request-Id, Host'],
      ['Keep-Alive', 'timeout=5'], ['Proxy-Connection', 'keep-alive'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAAQAoAAAAAIAAAAA'],
      ['Proxy-Authorization', 'Basic Zm9vOmJhcg=='], ['Trailer', 'x-sum'], ['TE', 'gzip'], ['X-Secret', 'hop'], ['X-Kept', 'end-to-end'],
    ])
    const names = namesOf(rec)
    for (const h of ['keep-alive', 'proxy-connection', 'upgrade', 'http2-settings', 'proxy-authorization', 'trailer', 'te', 'x-secret']) {
      t.notOk(names.includes(h), `${h} removed`)
    }
    t.not(rec.headers.connection, 'keep-alive, X-Secret, X-User-Id, X-Forwarded-For, X-Request-Id, Host', 'the client\'s Connection is not forwarded')
    t.equal(rec.headers['x-kept'], 'end-to-end', 'an end-to-end header passes')
    t.equal(rec.headers['x-user-id'], 'alice', 'a nominated identity header is still set')
    t.equal(rec.headers['x-forwarded-for'], '127.0.0.1', 'a nominated x-forwarded-for is still set')
    t.ok(rec.headers['x-request-id'], 'a nominated x-request-id is still set')
    t.equal(count(rec.rawHeaders, 'host'), 1, 'a nominated Host is still set, once')
  })

  t.test('R1: a chunked request body reaches the upstream with the gateway\'s own framing', async (t) => {
    // read whole first (requestBuffering, the default): sent with its length
    let before = up.requests.length
    let res = await rawRequest(gw.url, requestBytes('POST', '/open/x', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], '3\r\nabc\r\n0\r\n\r\n'))
    t.equal(res.status, 200)
    t.equal(up.requests[before]?.body.toString(), 'abc')
    t.equal(count(up.requests[before]!.rawHeaders, 'transfer-encoding'), 0, 'buffered: no Transfer-Encoding')
    t.equal(count(up.requests[before]!.rawHeaders, 'content-length'), 1, 'buffered: one Content-Length, undici\'s')
    t.equal(up.requests[before]?.headers['content-length'], '3')
    // streamed (requestBuffering: false): chunked again, by undici
    before = up.requests.length
    res = await rawRequest(gw.url, requestBytes('POST', '/streamed/x', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], '3\r\nabc\r\n0\r\n\r\n'))
    t.equal(res.status, 200)
    t.equal(up.requests[before]?.body.toString(), 'abc')
    t.equal(count(up.requests[before]!.rawHeaders, 'transfer-encoding'), 1, 'streamed: one Transfer-Encoding, undici\'s')
    t.equal(count(up.requests[before]!.rawHeaders, 'content-length'), 0, 'streamed: no Content-Length')
  })

  t.test('R2: Host is the upstream\'s own; the client\'s is x-forwarded-host', async (t) => {
    const rec = await send([])
    t.equal(rec.headers.host, new URL(up.url).host)
    t.equal(rec.headers['x-forwarded-host'], 'client.example')
  })

  t.test('R3: reserved prefix, x-portcullis-* and mapped identity names are removed in any spelling', async (t) => {
    for (const path of ['/api/x', '/open/x']) {
      const rec = await send([
        ['X-User-Id', 'mallory'], ['x-user-id', 'again'], ['X_USER_ID', 'under'], ['x-user-anything', '1'],
        ['X-Portcullis-Identity-Truncated', 'x-user-id'], ['x_portcullis_assertion', 'forged'], ['X-Tenant', 'evil'], ['x_tenant', 'evil'],
      ], path)
      const names = namesOf(rec).map(n => n.replaceAll('_', '-'))
      t.equal(names.filter(n => n === 'x-user-id').length, path === '/api/x' ? 1 : 0, `${path}: only the gateway's x-user-id`)
      if (path === '/api/x') t.equal(rec.headers['x-user-id'], 'alice')
      t.notOk(names.some(n => n === 'x-user-anything' || n.startsWith('x-portcullis-') || n === 'x-tenant'), `${path}: no client copy of a reserved or mapped header`)
    }
  })

  t.test('R4: method- and path-override headers are removed', async (t) => {
    const rec = await send([
      ['X-HTTP-Method-Override', 'DELETE'], ['X-HTTP-Method', 'DELETE'], ['X-Method-Override', 'DELETE'],
      ['X-Original-URL', '/admin/delete-all'], ['X-Rewrite-URL', '/admin/delete-all'], ['x_original_url', '/admin'],
    ], '/open/x')
    const names = namesOf(rec).map(n => n.replaceAll('_', '-'))
    for (const h of ['x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url']) t.notOk(names.includes(h), `${h} removed`)
    t.equal(rec.url, '/open/x', 'the path that was authorized is the one forwarded')
  })

  t.test('R5: forwarding headers only from a trusted proxy, in any spelling', async (t) => {
    const forged: Array<[string, string]> = [
      ['X-Forwarded-For', '6.6.6.6'], ['X-Forwarded-Proto', 'https'], ['X-Forwarded-Host', 'evil.example'], ['X-Forwarded-Port', '443'],
      ['X-Forwarded-Prefix', '/admin'], ['X-Forwarded-Scheme', 'https'], ['X-Forwarded-Ssl', 'on'], ['X-Forwarded-Server', 'evil'],
      ['Forwarded', 'for=6.6.6.6;proto=https'], ['X-Real-IP', '6.6.6.6'], ['X_Forwarded_For', '7.7.7.7'], ['x_real_ip', '7.7.7.7'],
    ]
    const rec = await send(forged, '/open/x')
    t.equal(rec.headers['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for is the peer')
    t.equal(rec.headers['x-forwarded-proto'], new URL(gw.url).protocol.slice(0, -1), 'x-forwarded-proto is the real scheme')
    t.equal(rec.headers['x-forwarded-host'], 'client.example', 'x-forwarded-host is the real Host')
    const names = namesOf(rec).map(n => n.replaceAll('_', '-'))
    for (const h of ['x-forwarded-port', 'x-forwarded-prefix', 'x-forwarded-scheme', 'x-forwarded-ssl', 'x-forwarded-server', 'forwarded', 'x-real-ip']) t.notOk(names.includes(h), `${h} dropped`)
    t.equal(names.filter(n => n === 'x-forwarded-for').length, 1, 'one x-forwarded-for, no underscore twin')

    const trusting = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: up.url, auth: 'public' }], { server: { trustProxy: ['127.0.0.1/32'] } }))
    const before = up.requests.length
    await rawRequest(trusting.url, requestBytes('GET', '/open/x', [['Host', 'lb.example'], ['X-Forwarded-For', '6.6.6.6'], ['X-Forwarded-Prefix', '/app']]))
    t.equal(up.requests[before]?.headers['x-forwarded-for'], '6.6.6.6, 127.0.0.1', 'trusted: the chain is appended')
    t.equal(up.requests[before]?.headers['x-forwarded-prefix'], '/app', 'trusted: kept')
  })

  t.test('R6: Authorization and the refresh cookie are not forwarded', async (t) => {
    const rec = await send([['Cookie', `${NAME}=SECRET; theme=dark`], ['Cookie', ` ${NAME} =SECRET2`], ['Cookie', `lang=en; ${NAME}`]])
    t.equal(rec.headers.authorization, undefined, 'no Authorization')
    t.notMatch(String(rec.headers.cookie), /SECRET|portcullis-rt/, 'no refresh cookie in any spelling a parser would accept')
    t.match(String(rec.headers.cookie), /theme=dark/, 'other cookies pass')
    t.match(String(rec.headers.cookie), /lang=en/)
  })

  t.test('R7: x-request-id is the client\'s when well-formed, else the gateway\'s', async (t) => {
    t.equal((await send([['X-Request-Id', 'abc-123']])).headers['x-request-id'], 'abc-123')
    const bad = await send([['X-Request-Id', 'a b <script>']])
    t.match(bad.headers['x-request-id'], /^[0-9a-f-]{36}$/, 'malformed: replaced')
    const twin = await send([['X-Request-Id', 'abc-123'], ['X_Request_Id', 'forged']])
    t.same(namesOf(twin).filter(n => n.replaceAll('_', '-') === 'x-request-id'), ['x-request-id'], 'no underscore twin')
  })

  t.test('R8: Expect is removed; TE passes only as trailers', async (t) => {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    await client.send(requestBytes('POST', '/open/x', [['Host', 'a.example'], ['Content-Length', '2'], ['Expect', '100-continue'], ['TE', 'trailers, gzip']]))
    await client.waitFor('100 Continue')
    await client.send('ok')
    t.equal((await client.response()).status, 200)
    const rec = up.requests.at(-1)!
    t.equal(rec.headers.expect, undefined, 'no Expect')
    t.equal(rec.headers.te, 'trailers', 'TE: trailers only')
  })

  t.test('R9: traceparent passes through untouched while tracing is off', async (t) => {
    const tp = '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01'
    t.equal((await send([['traceparent', tp]])).headers.traceparent, tp)
  })

  t.test('R10: Content-Length passes with the body it counts', async (t) => {
    const rec = await send([], '/open/x', 'POST', 'hello')
    t.equal(rec.headers['content-length'], '5')
    t.equal(rec.body.toString(), 'hello')
  })

  t.test('R11: a name with `_` passes unless it spells a header the gateway owns', async (t) => {
    const rec = await send([['x_api_key', 'k1'], ['X_Forwarded_Host', 'evil'], ['Proxy_Authorization', 'Basic x'], ['Transfer_Encoding', 'chunked']], '/open/x')
    const names = namesOf(rec)
    t.equal(rec.headers.x_api_key, 'k1', 'an application header with `_` passes')
    t.notOk(names.includes('x_forwarded_host'), 'X_Forwarded_Host dropped')
    t.notOk(names.includes('proxy_authorization'), 'Proxy_Authorization dropped (hop-by-hop)')
    t.notOk(names.includes('transfer_encoding'), 'Transfer_Encoding dropped (hop-by-hop)')
  })
})

t.test('response rules (src/proxy/response-headers.ts)', async (t) => {
  const up = await scripted(t, (path) => {
    const r = (head: string, body = ''): string => `HTTP/1.1 ${head}\r\nContent-Length: ${body.length}\r\n\r\n${body}`
    switch (path) {
      case '/api/hop': return r('200 OK\r\nConnection: keep-alive, X-Internal\r\nKeep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nX-Internal: secret\r\nUpgrade: h2c\r\nProxy-Authenticate: Basic\r\nX-Visible: yes', 'ok')
      case '/api/id': return r('200 OK\r\nX-Request-Id: upstream-chosen', 'ok')
      case '/api/cookie': return r(`200 OK\r\nSet-Cookie: ${NAME} =planted; Path=/\r\nSet-Cookie: theme=dark`, 'ok')
      case '/api/csd': return r('200 OK\r\nClear-Site-Data: "cookies", "storage"', 'ok')
      case '/inner/cookies': return r(['200 OK', ...COOKIES_SENT.map(([sent]) => `Set-Cookie: ${sent}`)].join('\r\n'), 'ok')
      case '/inner/moved': return r('302 Found\r\nLocation: /inner/new?x=1', '')
      case '/inner/moved-out': return r('302 Found\r\nLocation: https://elsewhere.example/inner/1', '')
      case '/inner/moved-sibling': return r('302 Found\r\nLocation: /innerx/1', '')
      case '/api/cors': return r('200 OK\r\nAccess-Control-Allow-Origin: *\r\nAccess-Control-Allow-Credentials: true\r\nAccess-Control-Allow-Methods: DELETE\r\nVary: Accept-Encoding', 'ok')
      case '/api/trailers': return 'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n2\r\nok\r\n0\r\nX-Sum: 1\r\nSet-Cookie: a=b\r\n\r\n'
      case '/api/bad-value': return r('200 OK\r\nX-Bin: \u00ff\u00fe\u0001', 'ok')
      case '/api/no-content': return 'HTTP/1.1 204 No Content\r\nContent-Length: 0\r\nX-A: 1\r\n\r\n'
      default: return r('200 OK', 'ok')
    }
  })
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, rewritePrefix: '/api', auth: 'public' },
    { name: 'moved', prefix: '/m', upstream: up.url, rewritePrefix: '/inner', auth: 'public' },
    { name: 'pages', prefix: '/pages', upstream: up.url, rewritePrefix: '/api', auth: 'public', sandbox: false },
    { name: 'shared', prefix: '/shared', upstream: up.url, rewritePrefix: '/inner', auth: 'public', cookies: 'pass' },
    { name: 'cookieless', prefix: '/cookieless', upstream: up.url, rewritePrefix: '/inner', auth: 'public', cookies: 'drop' },
  ]))
  const get = (path: string, headers: Array<[string, string]> = []): ReturnType<typeof rawRequest> =>
    rawRequest(gw.url, requestBytes('GET', path, [['Host', 'a.example'], ...headers]))

  t.test('S1: hop-by-hop and Connection-nominated response headers are removed', async (t) => {
    const res = await get('/api/hop')
    for (const h of ['proxy-connection', 'x-internal', 'upgrade', 'proxy-authenticate']) t.equal(res.headers[h], undefined, `${h} removed`)
    t.not(res.headers['keep-alive'], 'timeout=5', 'Keep-Alive is the gateway\'s own, not the upstream\'s')
    t.not(res.headers.connection, 'keep-alive, X-Internal', 'the client connection header is the gateway\'s')
    t.equal(res.headers['x-visible'], 'yes')
  })

  t.test('S2: x-request-id is the gateway\'s', async (t) => {
    const res = await get('/api/id', [['X-Request-Id', 'client-7']])
    t.equal(res.headers['x-request-id'], 'client-7')
  })

  t.test('S3: no Set-Cookie for the refresh cookie (fix-upstream-refresh-cookie has every variant)', async (t) => {
    t.equal((await get('/api/cookie')).headers['set-cookie'], 'theme=dark; Path=/api', 'the other cookie passes (kept under the route: S14)')
  })

  t.test('S4: Clear-Site-Data is removed', async (t) => {
    t.equal((await get('/api/csd')).headers['clear-site-data'], undefined)
  })

  t.test('S5: Location under rewritePrefix is moved back under the prefix; others pass', async (t) => {
    t.equal((await get('/m/moved')).headers.location, '/m/new?x=1')
    t.equal((await get('/m/moved-out')).headers.location, 'https://elsewhere.example/inner/1', 'an absolute URL passes')
    t.equal((await get('/m/moved-sibling')).headers.location, '/innerx/1', 'only whole segments move')
  })

  t.test('S6: on a CORS route the gateway\'s Access-Control-* replace the upstream\'s; Origin joins Vary', async (t) => {
    const cors = await startGateway(t, { ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: up.url, auth: 'public' }]), cors: { origins: ['https://app.example'] } })
    const get = (path: string, headers: Array<[string, string]> = []): ReturnType<typeof rawRequest> =>
      rawRequest(cors.url, requestBytes('GET', path, [['Host', 'a.example'], ...headers]))
    const allowed = await get('/api/cors', [['Origin', 'https://app.example']])
    t.equal(allowed.headers['access-control-allow-origin'], 'https://app.example')
    t.equal(allowed.headers['access-control-allow-methods'], undefined, 'the upstream\'s are gone')
    t.equal(allowed.headers.vary, 'Accept-Encoding, Origin', 'Origin joins the upstream\'s Vary')
    const other = await get('/api/cors', [['Origin', 'https://evil.example']])
    t.equal(other.headers['access-control-allow-origin'], undefined, 'another origin gets no grant, not even the upstream\'s *')
    t.equal(other.headers['access-control-allow-credentials'], undefined)
    const before = up.paths.length
    const preflight = await rawRequest(cors.url, requestBytes('OPTIONS', '/api/cors', [['Host', 'a.example'], ['Origin', 'https://evil.example'], ['Access-Control-Request-Method', 'DELETE']]))
    t.equal(preflight.status, 403, 'a preflight from another origin: 403')
    t.equal(preflight.json().code, 'cors_rejected')
    t.equal(up.paths.length, before, 'a preflight is never proxied')
  })

  t.test('S7: trailers are relayed without the fields a trailer may not carry (fix-trailers-and-early-hints)', async (t) => {
    const res = await get('/api/trailers')
    t.same(res.trailers, { 'x-sum': '1' })
  })

  // undici already refuses control characters in a value, and hands the rest over as latin1,
  // which Node writes back byte for byte: Node's own refusal (writeHead throws) stays a second line
  t.test('S8: a header value the gateway cannot relay as it came fails the exchange with 502', async (t) => {
    const res = await get('/api/bad-value')
    t.equal(res.status, 502)
    t.equal(res.json().code, 'upstream_unavailable')
    t.equal((await get('/api/x')).status, 200, 'and the route still works')
  })

  t.test('S9: a 204 carries no Content-Length', async (t) => {
    const res = await get('/api/no-content')
    t.equal(res.status, 204)
    t.equal(res.headers['content-length'], undefined)
    t.equal(res.headers['x-a'], '1')
  })

  t.test('S13: answers are sandboxed unless the route serves trusted pages (fix-upstream-document-mints-tokens)', async (t) => {
    t.equal((await get('/api/plain')).headers['content-security-policy'], 'sandbox', 'the default')
    t.equal((await get('/api/no-content')).headers['content-security-policy'], 'sandbox', 'a 204 too')
    t.equal((await get('/pages/plain')).headers['content-security-policy'], undefined, 'sandbox: false')
  })

  t.test('S14: each route\'s cookies are its own (cookies: route), or as sent (pass), or none (drop) — fix-upstream-cookie-jar', async (t) => {
    const got = async (path: string): Promise<string[]> => ([] as string[]).concat((await get(path)).headers['set-cookie'] ?? [])
    // `moved`: prefix /m, upstream under /inner
    t.same(await got('/m/cookies'), COOKIES_SENT.flatMap(([, scoped]) => scoped === undefined ? [] : [scoped]), 'route (the default): each kept under the prefix, host-only')
    t.same(await got('/shared/cookies'), COOKIES_SENT.map(([sent]) => sent), 'pass: as sent')
    t.same(await got('/cookieless/cookies'), [], 'drop: none')
  })
})

t.test('A: request framing Node\'s parser refuses is never proxied', async (t) => {
  const up = await recording(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: up.url, auth: 'public' }]))
  const rows: Array<[name: string, bytes: string]> = [
    ['obs-fold (CVE-2024-27982 class)', 'GET /open/x HTTP/1.1\r\nHost: a.example\r\nX-A: 1\r\n  folded\r\n\r\n'],
    ['obs-fold on Content-Length', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nContent-Length:\r\n 5\r\n\r\nhello'],
    ['whitespace before the colon', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n'],
    ['a space in a header name', 'GET /open/x HTTP/1.1\r\nHost: a.example\r\nX Forwarded For: 1.2.3.4\r\n\r\n'],
    ['whitespace before the first header', 'GET /open/x HTTP/1.1\r\n Host: a.example\r\n\r\n'],
    ['two different Content-Length', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!'],
    ['two equal Content-Length', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'],
    ['Content-Length with a sign', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: +5\r\n\r\nhello'],
    ['Content-Length and Transfer-Encoding', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'],
    ['bare LF line endings', 'GET /open/x HTTP/1.1\nHost: a.example\n\n'],
    ['a NUL in a header value', 'GET /open/x HTTP/1.1\r\nHost: a.example\r\nX-A: a\u0000b\r\n\r\n'],
    ['a bad chunk size', 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\r\n5x\r\nhello\r\n0\r\n\r\n'],
    ['an absolute-form target', 'GET http://evil.example/open/x HTTP/1.1\r\nHost: a.example\r\n\r\n'],
  ]
  // an expectation other than 100-continue: Node answers 417 itself
  const before417 = up.requests.length
  const expectation = await rawRequest(gw.url, 'POST /open/x HTTP/1.1\r\nHost: a.example\r\nExpect: something-else\r\nContent-Length: 2\r\n\r\nhi')
  t.equal(expectation.status, 417, 'Expect: something-else: 417')
  t.equal(up.requests.length, before417, 'Expect: something-else: never proxied')
  for (const [name, bytes] of rows) {
    const before = up.requests.length
    const res = await rawRequest(gw.url, bytes).catch((err: Error) => err)
    if (res instanceof Error) {
      t.fail(`${name}: no answer (${res.message.slice(0, 60)})`)
      continue
    }
    t.equal(res.status, 400, `${name}: 400`)
    t.equal(up.requests.length, before, `${name}: never proxied`)
  }
})

t.test('A: what a broken or hostile upstream sends back', async (t) => {
  const big = 'x'.repeat(20 * 1024)
  const up = await scripted(t, (path, method) => {
    switch (path) {
      case '/api/head': return 'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: text/plain\r\n\r\n'
      case '/api/204-body': return 'HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello'
      case '/api/304-body': return 'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\nHTTP/1.1 200 OK\r\nSet-Cookie: smuggled=1\r\nContent-Length: 0\r\n\r\n'
      case '/api/dup-cl': return 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 5\r\n\r\nhello'
      case '/api/dup-cl-same': return 'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello'
      case '/api/cl-te': return 'HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n'
      case '/api/fold': return 'HTTP/1.1 200 OK\r\nX-A: one\r\n two\r\nContent-Length: 2\r\n\r\nok'
      case '/api/cr': return 'HTTP/1.1 200 OK\r\nX-A: one\rSet-Cookie: x=1\r\nContent-Length: 2\r\n\r\nok'
      case '/api/huge': return `HTTP/1.1 200 OK\r\nX-Big: ${big}\r\nContent-Length: 2\r\n\r\nok`
      case '/api/cookies': return 'HTTP/1.1 200 OK\r\n' + Array.from({ length: 300 }, (_v, i) => `Set-Cookie: c${i}=${i}\r\n`).join('') + 'Content-Length: 2\r\n\r\nok'
      case '/api/cookie-flood': return 'HTTP/1.1 200 OK\r\n' + Array.from({ length: 2000 }, (_v, i) => `Set-Cookie: c${i}=${i}\r\n`).join('') + 'Content-Length: 2\r\n\r\nok'
      case '/api/1xx-te': return 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nTransfer-Encoding: chunked\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
      case '/api/1xx-cl': return 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
      case '/api/1xx-cl-te': return 'HTTP/1.1 103 Early Hints\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
      case '/api/garbage': return 'HTTP/1.1 2OO OK\r\n\r\n'
      case '/api/space-name': return 'HTTP/1.1 200 OK\r\nX Bad: 1\r\nContent-Length: 2\r\n\r\nok'
      case '/api/space-colon': return 'HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok'
      case '/api/100': return 'HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
      default: return method === 'HEAD' ? 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n' : 'HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok'
    }
  })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: up.url, auth: 'public', connections: 1 }]))

  t.test('HEAD: Content-Length is kept, no body is awaited, the connection serves the next request', async (t) => {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    await client.send(requestBytes('HEAD', '/api/head', [['Host', 'a.example']]) + requestBytes('GET', '/api/x', [['Host', 'a.example']]).toString('latin1'))
    const head = await client.response({ head: true, timeoutMs: 2000 })
    t.equal(head.status, 200)
    t.equal(head.headers['content-length'], '1000', 'the length a GET would have')
    const next = await client.response({ timeoutMs: 2000 })
    t.equal(next.status, 200, 'the next response follows at once')
    t.equal(next.body.toString(), 'ok')
  })

  t.test('a body after a 204 or 304 never reaches the client, and never becomes the next response', async (t) => {
    for (const path of ['/api/204-body', '/api/304-body']) {
      const client = await RawClient.connect(gw.url)
      t.teardown(() => client.destroy())
      await client.send(requestBytes('GET', path, [['Host', 'a.example']]))
      const res = await client.response()
      t.ok(res.status === 204 || res.status === 304, `${path}: ${res.status}`)
      await client.send(requestBytes('GET', '/api/x', [['Host', 'a.example']]))
      const next = await client.response()
      t.equal(next.status, 200, `${path}: the next request on the client connection is answered by its own response`)
      t.equal(next.headers['set-cookie'], undefined, `${path}: nothing the upstream smuggled after it`)
      t.equal(next.body.toString(), 'ok')
    }
  })

  t.test('framing the upstream gets wrong is a 502, and the pool recovers (keep-alive reuse after an error)', async (t) => {
    for (const path of ['/api/dup-cl', '/api/dup-cl-same', '/api/cl-te', '/api/1xx-cl-te', '/api/garbage', '/api/space-name', '/api/space-colon', '/api/cr', '/api/100']) {
      const res = await rawRequest(gw.url, requestBytes('GET', path, [['Host', 'a.example']]))
      t.equal(res.status, 502, `${path}: 502`)
      t.equal(res.json().code, 'upstream_unavailable', `${path}: upstream_unavailable`)
      const next = await rawRequest(gw.url, requestBytes('GET', '/api/x', [['Host', 'a.example']]))
      t.equal(next.status, 200, `${path}: the next request on the route works`)
    }
  })

  t.test('obs-fold in an upstream header is refused, never relayed with a line break', async (t) => {
    const res = await rawRequest(gw.url, requestBytes('GET', '/api/fold', [['Host', 'a.example']]))
    t.equal(res.status, 502)
  })

  t.test('a header block over undici\'s limit (16 KiB) is a 502', async (t) => {
    const res = await rawRequest(gw.url, requestBytes('GET', '/api/huge', [['Host', 'a.example']]))
    t.equal(res.status, 502)
    t.equal(res.json().code, 'upstream_unavailable')
  })

  t.test('Set-Cookie: many are relayed one by one; a flood over the header limit is a 502', async (t) => {
    const res = await rawRequest(gw.url, requestBytes('GET', '/api/cookies', [['Host', 'a.example']]))
    t.equal(res.status, 200)
    t.equal(([] as string[]).concat(res.headers['set-cookie'] ?? []).length, 300, 'all 300, each on its own line')
    const flood = await rawRequest(gw.url, requestBytes('GET', '/api/cookie-flood', [['Host', 'a.example']]))
    t.equal(flood.status, 502)
  })

  t.test('Transfer-Encoding or Content-Length on a 1xx are not relayed', async (t) => {
    for (const [path, name] of [['/api/1xx-te', 'transfer-encoding'], ['/api/1xx-cl', 'content-length']]) {
      const res = await rawRequest(gw.url, requestBytes('GET', path!, [['Host', 'a.example']]))
      t.equal(res.status, 200, `${path}: 200`)
      t.equal(res.body.toString(), 'ok', `${path}: the final body intact`)
      const hints = res.interim[0]
      t.equal(hints?.status, 103, `${path}: the 103 relayed`)
      t.equal(hints?.headers[name!], undefined, `${path}: without ${name}`)
    }
  })
})
