import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { RawClient, chunked, rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Issue 8, item 9: a GET or HEAD request body was silently dropped (the upstream got the
// request without it, and on a kept-alive connection the unread body could be read as the
// next request). It is forwarded like any other body, framed as the client framed it.

const key = makeKey('EdDSA')

t.test('a body on GET, HEAD, DELETE and OPTIONS reaches the upstream', async (t) => {
  const upstream = await startUpstream((rec, res) => {
    res.setHeader('content-type', 'application/json')
    res.end(rec.method === 'HEAD' ? undefined : JSON.stringify({ got: rec.body.toString() }))
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'search', prefix: '/search', upstream: upstream.url, auth: 'public' }]))
  const body = '{"query":{"match":"books"}}'
  for (const method of ['GET', 'HEAD', 'DELETE', 'OPTIONS']) {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes(method, '/search/_search', [['Host', 'a.example'], ['Content-Type', 'application/json'], ['Content-Length', String(body.length)]], body), { head: method === 'HEAD' })
    t.equal(res.status, 200, `${method} with Content-Length: 200`)
    const got = upstream.requests[before]
    t.equal(got?.method, method, `${method}: proxied as ${method}`)
    t.equal(got?.body.toString(), body, `${method} with Content-Length: the body arrived`)
    t.equal(got?.headers['content-length'], String(body.length), `${method}: with its length`)
  }

  const before = upstream.requests.length
  const res = await rawRequest(gw.url, requestBytes('GET', '/search/_search', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], chunked(['{"query":', '"chunked"}'])))
  t.equal(res.status, 200, 'GET with a chunked body: 200')
  t.equal(upstream.requests[before]?.body.toString(), '{"query":"chunked"}', 'GET with a chunked body: the body arrived')
})

t.test('a GET body is never read as the next request on a kept-alive connection', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'admin', prefix: '/admin', upstream: upstream.url, auth: 'required' },
  ]))
  // the body is itself a request line: if it were dropped unread, it would be parsed next
  const smuggled = 'GET /admin/secret HTTP/1.1\r\nHost: a.example\r\n\r\n'
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(Buffer.concat([
    requestBytes('GET', '/open/x', [['Host', 'a.example'], ['Content-Length', String(smuggled.length)]], smuggled),
    requestBytes('GET', '/open/y', [['Host', 'a.example']]),
  ]))
  const first = await client.response()
  const second = await client.response()
  t.equal(first.status, 200)
  t.equal(second.status, 200)
  // both safe, so forwarded side by side: /open/y may arrive first while /open/x's body is read whole
  t.same(upstream.requests.map(r => r.url).sort(), ['/open/x', '/open/y'], 'two requests upstream, none to /admin')
  t.equal(upstream.requests.find(r => r.url === '/open/x')?.body.toString(), smuggled, 'the first one carried its body')
})
