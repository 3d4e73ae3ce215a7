import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Issue 8, item 9: response trailers and `103 Early Hints` were swallowed. Both are relayed
// (RFC 9110 §6.5, RFC 8297), through the same response rules as headers; `TE: trailers`
// (what gRPC clients send) reaches the upstream, other TE values do not.

const key = makeKey('EdDSA')
const NAME = '__Host-portcullis-rt'

t.test('trailers and 103 Early Hints reach the client', async (t) => {
  const upstream = await startUpstream((rec, res) => {
    if (rec.url.endsWith('/hints')) {
      res.writeEarlyHints({ link: ['</app.css>; rel=preload; as=style', '</app.js>; rel=preload; as=script'] })
      setTimeout(() => { res.setHeader('content-type', 'text/html'); res.end('<html></html>') }, 20)
      return
    }
    res.writeHead(200, { 'content-type': 'application/grpc', trailer: 'grpc-status, grpc-message' })
    res.write('frame-1')
    res.addTrailers({ 'grpc-status': '0', 'grpc-message': 'OK' })
    res.end('frame-2')
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))

  const res = await rawRequest(gw.url, requestBytes('POST', '/open/svc/Method', [['Host', 'a.example'], ['TE', 'trailers'], ['Content-Length', '0']]))
  t.equal(res.status, 200)
  t.equal(res.framing, 'chunked', 'chunked to the client, so trailers can follow')
  t.equal(res.body.toString(), 'frame-1frame-2', 'the body whole')
  t.equal(res.headers.trailer, 'grpc-status, grpc-message', 'the Trailer announcement passes')
  t.same(res.trailers, { 'grpc-status': '0', 'grpc-message': 'OK' }, 'the trailers arrive')
  t.equal(upstream.requests[0]?.headers.te, 'trailers', 'TE: trailers reached the upstream')

  const hinted = await rawRequest(gw.url, requestBytes('GET', '/open/hints', [['Host', 'a.example']]))
  t.equal(hinted.status, 200)
  t.equal(hinted.interim.length, 1, 'one interim response')
  t.equal(hinted.interim[0]?.status, 103, '103 Early Hints')
  t.equal(hinted.interim[0]?.headers.link, '</app.css>; rel=preload; as=style, </app.js>; rel=preload; as=script', 'with its links (Node joins them on one line)')
  t.equal(hinted.body.toString(), '<html></html>')
})

t.test('TE other than trailers is not forwarded', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  for (const [te, expected] of [['gzip', undefined], ['trailers, deflate;q=0.5', 'trailers'], ['Trailers', 'trailers']] as const) {
    const before = upstream.requests.length
    await rawRequest(gw.url, requestBytes('GET', '/open/x', [['Host', 'a.example'], ['TE', te], ['Connection', 'TE']]))
    t.equal(upstream.requests[before]?.headers.te, expected, `TE: ${te} → ${String(expected)}`)
  }
})

t.test('trailers go through the response rules: nothing a trailer may not carry, no refresh cookie', async (t) => {
  const upstream = await startUpstream((_rec, res) => {
    // raw bytes: Node would not let us write some of these trailers
    res.socket!.write('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n' +
      '2\r\nok\r\n0\r\n' +
      'X-Checksum: abc\r\n' +
      `Set-Cookie: ${NAME}=planted; Path=/\r\n` +
      'Transfer-Encoding: chunked\r\nContent-Type: text/html\r\nLocation: https://evil.example/\r\n' +
      'Clear-Site-Data: "*"\r\nX-Request-Id: upstream-chosen\r\nConnection: close\r\nWWW-Authenticate: Basic\r\n\r\n')
    res.socket!.end()
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const res = await rawRequest(gw.url, requestBytes('GET', '/open/x', [['Host', 'a.example'], ['X-Request-Id', 'client-1']]))
  t.equal(res.status, 200)
  t.equal(res.body.toString(), 'ok')
  t.same(res.trailers, { 'x-checksum': 'abc' }, 'only the application trailer is relayed')
  t.equal(res.headers['x-request-id'], 'client-1', 'the request id is the gateway\'s')
})
