import t from 'tap'
import { connect, type ClientHttp2Session, type IncomingHttpHeaders } from 'node:http2'
import { request as httpsRequest } from 'node:https'
import { X509Certificate } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import type { TLSSocket } from 'node:tls'
import { stringify } from 'yaml'
import { pino } from 'pino'
import { loadConfigFile } from '../../src/config/load.js'
import { buildGateway } from '../../src/app.js'
import { listen } from '../../src/server.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { testCertificate } from '../fixtures/tls.js'

// Issue 12, item 3: HTTPS and HTTP/2 on the public listener. HTTP/2 requests get the same
// decisions and the upstream the same headers as HTTP/1.1 — and none of h2's pseudo-headers
// or connection-specific fields, which HTTP/2 forbids and HTTP/1.1 upstreams would misread.

interface H2Response { status: number, headers: IncomingHttpHeaders, body: string }

function h2 (session: ClientHttp2Session, path: string, headers: Record<string, string> = {}, body?: string): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = session.request({ ':path': path, ':method': body === undefined ? 'GET' : 'POST', ...headers })
    let status = 0
    let responseHeaders: IncomingHttpHeaders = {}
    let data = ''
    stream.on('response', (h) => { status = Number(h[':status']); responseHeaders = h })
    stream.on('data', (c: Buffer) => { data += c.toString() })
    stream.on('end', () => resolve({ status, headers: responseHeaders, body: data }))
    stream.on('error', reject)
    stream.end(body)
  })
}

t.test('HTTP/2 with HTTP/1.1 offered: same decisions, same upstream headers', async (t) => {
  const key = makeKey('EdDSA')
  const cert = testCertificate(t)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'orders', prefix: '/api/orders', upstream: upstream.url, rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } },
  ], { server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true } }))
  const base = `https://127.0.0.1:${gw.port}`
  const session = connect(base, { ca: cert.certPem })
  t.teardown(() => session.close())
  const token = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' }))

  const missing = await h2(session, '/api/orders/1')
  t.equal(missing.status, 401, 'h2: no token → 401')
  t.match(String(missing.headers['www-authenticate']), /^Bearer realm="portcullis"$/, 'h2: the challenge')
  t.equal(JSON.parse(missing.body).code, 'missing_token')
  const scope = await h2(session, '/api/orders/1', { authorization: `Bearer ${token}` }, '{}')
  t.equal(scope.status, 403, 'h2: POST without orders:write → 403')
  t.equal(JSON.parse(scope.body).code, 'insufficient_scope')
  t.equal((await h2(session, '/api/orders/%2e%2e/admin', { authorization: `Bearer ${token}` })).status, 400, 'h2: an ambiguous path is refused')
  t.equal(upstream.requests.length, 0, 'nothing refused reached the upstream')

  const ok = await h2(session, '/api/orders/7?x=1', {
    authorization: `Bearer ${token}`,
    'x-user-id': 'mallory',
    te: 'trailers',
    'x-http-method-override': 'DELETE',
  })
  t.equal(ok.status, 200, 'h2: a valid token → 200')
  t.ok(ok.headers['x-request-id'], 'the response carries the request id')
  const rec = upstream.requests.at(-1)!
  t.equal(rec.url, '/orders/7?x=1', 'the path mapped as over HTTP/1.1')
  t.equal(rec.headers['x-user-id'], 'alice', 'identity from the token, not the client')
  t.equal(rec.headers.host, new URL(upstream.url).host, 'Host is the upstream\'s')
  t.equal(rec.headers['x-forwarded-host'], `127.0.0.1:${gw.port}`, ':authority becomes x-forwarded-host')
  t.equal(rec.headers['x-forwarded-proto'], 'https')
  t.equal(rec.headers.te, 'trailers', 'TE: trailers passes (gRPC needs it)')
  t.equal(rec.headers['x-http-method-override'], undefined, 'method override stripped')
  t.notOk(rec.rawHeaders.some((h, i) => i % 2 === 0 && h.startsWith(':')), 'no pseudo-header reached the upstream')
  t.equal(rec.headers.authorization, undefined, 'the token is not forwarded')

  // the same listener still speaks HTTP/1.1 (ALPN)
  const h1 = await new Promise<number>((resolve, reject) => {
    httpsRequest(`${base}/api/orders/8`, { ca: cert.certPem, headers: { authorization: `Bearer ${token}` }, agent: false }, (res) => { res.resume(); resolve(res.statusCode ?? 0) }).on('error', reject).end()
  })
  t.equal(h1, 200, 'HTTP/1.1 over the same TLS listener')
})

t.test('a reload swaps the certificate: new handshakes get the new one', async (t) => {
  const key = makeKey('EdDSA')
  const first = testCertificate(t)
  const second = testCertificate(t)
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const dir = t.testdir({})
  const certFile = `${dir}/cert.pem`
  const keyFile = `${dir}/key.pem`
  const copy = (c: typeof first): void => {
    writeFileSync(certFile, c.certPem)
    writeFileSync(keyFile, readFileSync(c.keyFile))
  }
  copy(first)
  const file = `${dir}/gateway.yaml`
  writeFileSync(file, stringify(baseConfig(key, [{ name: 'p', prefix: '/p', upstream: upstream.url, auth: 'public' }], { server: { tls: { certFile, keyFile } } })))
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(file, { env: {} })
  const gateway = await buildGateway(load(), { logger: pino({ level: 'silent' }), loadConfig: load })
  const l = await listen(gateway, { handleSignals: false })
  t.teardown(() => l.shutdown())
  const served = (): Promise<string> => new Promise((resolve, reject) => {
    const req = httpsRequest(`https://127.0.0.1:${l.port}/p/x`, { rejectUnauthorized: false, agent: false }, (res) => {
      const fingerprint = new X509Certificate((res.socket as TLSSocket).getPeerCertificate(true).raw).fingerprint256
      res.resume()
      resolve(fingerprint)
    })
    req.on('error', reject)
    req.end()
  })
  const fp = (pem: string): string => new X509Certificate(pem).fingerprint256
  t.equal(await served(), fp(first.certPem), 'the first certificate is served')
  copy(second)
  t.equal((await gateway.reload()).ok, true, 'a reload with the renewed files')
  t.equal(await served(), fp(second.certPem), 'the renewed certificate is served, without a restart')
})
