import t from 'tap'
import { connect } from 'node:http2'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { testCertificate } from '../fixtures/tls.js'
import { h2Request, type H2Response } from '../fixtures/h2-client.js'
import { RawClient, rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Findings of an adversarial review of the HTTP edge (stop 28), each reproduced against a
// real gateway on 127.0.0.1 with a recording upstream:
// - fix-raw-non-ascii-path-over-h2: over HTTP/2 a raw UTF-8 `:path` (`/api/ſecrets` as the
//   bytes C5 BF, a fullwidth `／` after `..`) reached the upstream through the `/api` route:
//   the check refused only the percent-encoded forms of characters some servers read as ASCII
//   (Node's HTTP/1.1 parser refuses raw bytes above 0x7F, HTTP/2 hands them over as latin1);
// - fix-method-override-php-spellings: `?.method=DELETE`, `?%20_method=`, `?[method=` and
//   `?_method[]=` on a POST passed, and PHP reads each as `$_GET['_method']` (so Symfony and
//   Laravel run a DELETE that was authorized as a POST); `?access.token=` likewise;
// - fix-other-proxies-headers-pass: the identity headers of other auth proxies (Azure App
//   Service, AWS ALB, Google IAP, Cloudflare Access, X-WEBAUTH-*, Kubernetes X-Remote-*) and
//   client-certificate, address, scheme and Envoy headers reached the upstream from any client;
// - fix-upgrade-with-body: a WebSocket upgrade declaring a body sent its Content-Length in the
//   upstream's handshake, with no body behind it.

const key = makeKey('EdDSA')
const token = (scope: string): string => `Bearer ${signWith(key, goodClaims({ scope }))}`

t.test('fix-raw-non-ascii-path-over-h2: raw non-ASCII in an HTTP/2 path is refused', async (t) => {
  const cert = testCertificate(t)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'secrets', prefix: '/api/secrets', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
  ], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }))
  const session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem, servername: 'localhost' })
  t.teardown(() => session.close())
  const get = async (path: string): Promise<H2Response> => await h2Request(session, { ':method': 'GET', ':path': path, authorization: token('orders:read') })
  t.equal((await get('/api/secrets')).status, 403, 'control: the protected route needs admin')
  t.equal((await get('/api/other')).status, 200, 'control: the open route passes')
  const before = upstream.requests.length
  // each string's characters are the bytes on the wire (latin1): raw UTF-8
  for (const [label, path] of [
    ['ſ (U+017F) as raw UTF-8', '/api/\xc5\xbfecrets'],
    ['the Kelvin sign (U+212A)', '/api/\xe2\x84\xaaeys'],
    ['dotless ı (U+0131)', '/api/adm\xc4\xb1n'],
    ['.. and a fullwidth solidus (U+FF0F)', '/api/..\xef\xbc\x8fsecrets'],
    ['fullwidth full stops and solidus', '/api/x/\xef\xbc\x8e\xef\xbc\x8e\xef\xbc\x8fsecrets'],
    ['a latin1 é', '/api/caf\xe9'],
  ]) {
    const res = await get(path as string)
    t.equal(res.status, 400, `${label}: 400`)
    t.equal(JSON.parse(res.body).code, 'path_rejected', `${label}: path_rejected`)
  }
  t.equal(upstream.requests.length, before, 'the upstream saw none of them')
  t.equal((await get('/api/caf%C3%A9')).status, 200, 'the same character percent-encoded still passes')
})

t.test('fix-method-override-php-spellings and fix-other-proxies-headers-pass', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required', scopes: { GET: ['orders:read'], POST: ['orders:write'], '*': ['admin'] } }]
  const gw = await startGateway(t, baseConfig(key, routes))
  const trustedGw = await startGateway(t, baseConfig(key, routes, { server: { trustProxy: ['127.0.0.1'] } }))
  const auth = token('orders:read orders:write')
  const send = async (base: string, method: string, target: string, headers: Array<[string, string]> = []): Promise<{ status: number, code: unknown, seen: Record<string, unknown> | undefined }> => {
    const before = upstream.requests.length
    const res = await rawRequest(base, requestBytes(method, target, [['Host', 'gateway.test'], ['Authorization', auth], ['Content-Length', '0'], ...headers]))
    const body = res.body.toString()
    return { status: res.status, code: body.startsWith('{') ? JSON.parse(body).code : undefined, seen: upstream.requests[before]?.headers as Record<string, unknown> | undefined }
  }

  t.test('_method as PHP reads it is refused on a POST', async (t) => {
    t.equal((await send(gw.url, 'DELETE', '/api/orders/42')).status, 403, 'control: DELETE needs admin')
    for (const query of ['.method=DELETE', '%20_method=DELETE', '+_method=DELETE', '[method=DELETE', '_method[]=DELETE', '_method[x]=DELETE',
      'x=1&.method=PUT', '%2Emethod=DELETE', '_METHOD%00x=DELETE', ' .method=DELETE'.replace(' ', '%20')]) {
      const res = await send(gw.url, 'POST', `/api/orders/42?${query}`)
      t.equal(res.status, 400, `?${query}: 400`)
      t.equal(res.code, 'method_override', `?${query}: method_override`)
      t.equal(res.seen, undefined, `?${query}: the upstream saw nothing`)
    }
    for (const query of ['method=DELETE', 'x.method=1', 'methods=1', '_methodx=1']) {
      t.equal((await send(gw.url, 'POST', `/api/orders/42?${query}`)).status, 200, `?${query}: not PHP's _method, passes`)
    }
    for (const query of ['access.token=abc', 'access%20token=abc', 'access[token=abc', 'access_token[]=abc']) {
      const res = await send(gw.url, 'GET', `/api/orders/42?${query}`)
      t.equal(res.status, 400, `?${query}: 400`)
      t.equal(res.code, 'token_in_query', `?${query}: token_in_query`)
    }
  })

  const identity: Array<[string, string]> = [
    ['X-MS-CLIENT-PRINCIPAL', 'eyJ1c2VyIjoiYWRtaW4ifQ'], ['X-MS-CLIENT-PRINCIPAL-NAME', 'admin'], ['X-MS-CLIENT-PRINCIPAL-ID', 'admin'],
    ['X-Amzn-Oidc-Identity', 'admin'], ['X-Amzn-Oidc-Data', 'x.y.z'], ['X-Goog-Authenticated-User-Email', 'accounts.google.com:admin@example.test'],
    ['X-Goog-Iap-Jwt-Assertion', 'x.y.z'], ['Cf-Access-Authenticated-User-Email', 'admin@example.test'], ['Cf-Access-Jwt-Assertion', 'x.y.z'],
    ['X-WEBAUTH-USER', 'admin'], ['X-Remote-Group', 'system:masters'], ['X-Remote-Extra-Scopes', 'admin'], ['X_Remote_Extra_Scopes', 'admin'],
  ]
  const forwarding: Array<[string, string]> = [
    ['X-Client-Cert', 'MIIB'], ['X-ARR-ClientCert', 'MIIB'], ['X-SSL-Client-Cert', 'MIIB'], ['X-SSL-Client-Verify', 'SUCCESS'],
    ['X-SSL-Client-S-DN', 'CN=admin'], ['Ssl-Client-Cert', 'MIIB'], ['Client-IP', '10.0.0.1'], ['X-Appengine-User-Ip', '10.0.0.1'],
    ['Cf-Pseudo-IPv4', '10.0.0.1'], ['X-Scheme', 'https'], ['X-ARR-SSL', 'on'], ['Front-End-Https', 'on'], ['X-Proxied-Https', 'on'],
    ['X-Url-Scheme', 'https'], ['x-envoy-retry-on', '5xx'], ['x-envoy-max-retries', '10'], ['x-envoy-internal', 'true'],
    ['x-envoy-external-address', '10.0.0.1'], ['x-envoy-original-path', '/admin'],
  ]
  const present = (seen: Record<string, unknown> | undefined, list: Array<[string, string]>): string[] =>
    list.map(([n]) => n.toLowerCase()).filter(n => seen?.[n] !== undefined)

  t.test('from a client: none of them reaches the upstream', async (t) => {
    const res = await send(gw.url, 'GET', '/api/orders/1', [...identity, ...forwarding, ['X-Custom-Header', 'kept']])
    t.equal(res.status, 200)
    t.same(present(res.seen, identity), [], 'no identity header of another auth proxy')
    t.same(present(res.seen, forwarding), [], 'no certificate, address, scheme or Envoy header')
    t.equal(res.seen?.['x-custom-header'], 'kept', 'an ordinary header passes')
    t.ok(res.seen?.['x-user-id'], 'the gateway\'s own identity is there')
  })

  t.test('from a trusted proxy: the forwarding ones pass, identity never', async (t) => {
    const res = await send(trustedGw.url, 'GET', '/api/orders/1', [...identity, ...forwarding])
    t.equal(res.status, 200)
    t.same(present(res.seen, identity), [], 'identity headers dropped even from a trusted proxy')
    t.same(present(res.seen, forwarding), forwarding.map(([n]) => n.toLowerCase()), 'the rest pass from a trusted proxy')
  })
})

t.test('fix-upgrade-with-body: a WebSocket handshake declaring a body is refused', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'public' }]))
  const handshake: Array<[string, string]> = [['Host', 'gateway.test'], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'],
    ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13']]
  for (const [label, extra, body] of [
    ['Content-Length: 40', [['Content-Length', '40']], 'x'.repeat(40)],
    ['Transfer-Encoding: chunked', [['Transfer-Encoding', 'chunked']], '0\r\n\r\n'],
  ] as Array<[string, Array<[string, string]>, string]>) {
    const res = await rawRequest(gw.url, requestBytes('GET', '/live/x', [...handshake, ...extra], body))
    t.equal(res.status, 400, `${label}: 400`)
    t.equal(res.json().code, 'bad_upgrade', `${label}: bad_upgrade`)
  }
  t.equal(upstream.upgrades.length, 0, 'the upstream got no handshake')
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('GET', '/live/x', [...handshake, ['Content-Length', '0']]))
  await client.waitFor('\r\n\r\n')
  t.match(client.received.toString('latin1'), /^HTTP\/1.1 101 /, 'Content-Length: 0 is no body: the handshake goes through')
  t.equal(upstream.upgrades.length, 1, 'and reaches the upstream')
})
