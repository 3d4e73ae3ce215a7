import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'

// Issue 8, item 8: `Expect: 100-continue` was answered by Node before authorization, so an
// unauthenticated client was told to send its body. The gateway answers it only once the
// request passed the guard (and the route's body and queue limits), right before forwarding;
// a refused request gets its final status instead, and the connection is closed since the
// body that may follow cannot be read as the next request.

const key = makeKey('EdDSA')

/** the first response head on a connection, before any body was sent */
async function firstHead (client: RawClient): Promise<string> {
  await client.waitFor('\r\n\r\n')
  return client.received.toString('latin1').split('\r\n')[0] ?? ''
}

t.test('100 Continue only after the guard passed', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', scopes: { '*': ['orders:write'] } },
  ]))
  const writer = `Bearer ${signWith(key, goodClaims({ scope: 'orders:write' }))}`
  const reader = `Bearer ${signWith(key, goodClaims({ scope: 'orders:read' }))}`
  const body = '{"item":"book"}'

  const refused: Array<[name: string, headers: Array<[string, string]>, status: number, code: string]> = [
    ['no token', [], 401, 'missing_token'],
    ['a bad token', [['Authorization', 'Bearer abc.def.ghi']], 401, 'token_malformed'],
    ['a token without the scope', [['Authorization', reader]], 403, 'insufficient_scope'],
  ]
  for (const [name, extra, status, code] of refused) {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    const headers: Array<[string, string]> = [['Host', 'a.example'], ['Content-Type', 'application/json'], ['Expect', '100-continue'], ...extra]
    if (!extra.some(([n]) => n === 'Content-Length')) headers.push(['Content-Length', String(body.length)])
    await client.send(requestBytes('POST', '/orders/new', headers))
    const head = await firstHead(client)
    t.notMatch(head, / 100 /, `${name}: no 100 Continue`)
    const res = await client.response()
    t.equal(res.interim.length, 0, `${name}: no interim response at all`)
    t.equal(res.status, status, `${name}: ${status}`)
    t.equal(res.json().code, code, `${name}: ${code}`)
    t.equal(res.headers.connection, 'close', `${name}: the connection closes (the body may still come)`)
    t.equal(upstream.requests.length, 0, `${name}: the upstream never saw it`)
  }

  // authorized: 100 Continue, then the body goes through
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('POST', '/orders/new', [['Host', 'a.example'], ['Authorization', writer], ['Content-Type', 'application/json'], ['Content-Length', String(body.length)], ['Expect', '100-continue']]))
  t.match(await firstHead(client), /^HTTP\/1\.1 100 /, 'authorized: 100 Continue first')
  await client.send(body)
  const res = await client.response()
  t.equal(res.status, 200, 'then the upstream\'s answer')
  t.equal(res.interim.length, 1, 'one interim response')
  t.equal(upstream.requests.length, 1)
  t.equal(upstream.requests[0]?.body.toString(), body, 'the body reached the upstream')
  t.equal(upstream.requests[0]?.headers.expect, undefined, 'Expect is not forwarded (the gateway answered it)')
})

t.test('a declared body over the route limit: 413 instead of 100 Continue', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', maxBodyBytes: 1000 }]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('POST', '/orders/x', [['Host', 'a.example'], ['Authorization', `Bearer ${signWith(key, goodClaims())}`], ['Content-Length', '5000'], ['Expect', '100-continue']]))
  t.notMatch(await firstHead(client), / 100 /, 'no 100 Continue')
  const res = await client.response()
  t.equal(res.status, 413)
  t.equal(res.json().code, 'payload_too_large')
  t.equal(res.headers.connection, 'close')
  t.equal(upstream.requests.length, 0, 'the upstream never saw it')
})

t.test('a chunked body behind Expect works the same way', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required' }]))
  const token = `Bearer ${signWith(key, goodClaims())}`
  const noToken = await RawClient.connect(gw.url)
  t.teardown(() => noToken.destroy())
  await noToken.send(requestBytes('POST', '/orders/x', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked'], ['Expect', '100-continue']]))
  t.notMatch(await firstHead(noToken), / 100 /, 'no token: no 100 Continue')
  t.equal((await noToken.response()).status, 401)

  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('POST', '/orders/x', [['Host', 'a.example'], ['Authorization', token], ['Transfer-Encoding', 'chunked'], ['Expect', '100-continue']]))
  t.match(await firstHead(client), /^HTTP\/1\.1 100 /, 'authorized: 100 Continue')
  await client.send('5\r\nhello\r\n0\r\n\r\n')
  t.equal((await client.response()).status, 200)
  t.equal(upstream.requests[0]?.body.toString(), 'hello')
})
