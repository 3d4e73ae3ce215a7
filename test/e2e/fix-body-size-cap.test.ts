import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { RawClient, chunked, rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { until } from '../fixtures/until.js'

// Issue 8, item 9: proxied request bodies had no size cap at all. routes[].maxBodyBytes is
// counted on the stream, chunked or not: a declared length over it is a 413 before anything
// goes upstream, and a chunked body is cut (413) before the upstream has seen more than the cap.

const key = makeKey('EdDSA')
const CAP = 1000

interface Seen { url: string, bytes: number, complete: boolean }

/** an upstream that records how many body bytes each request delivered, complete or not */
async function countingUpstream (t: Test): Promise<{ url: string, seen: Seen[], connections: () => number }> {
  const seen: Seen[] = []
  let connections = 0
  const server = createServer((req, res) => {
    const s: Seen = { url: req.url ?? '', bytes: 0, complete: false }
    seen.push(s)
    req.on('data', (c: Buffer) => { s.bytes += c.length })
    req.on('end', () => { s.complete = true; res.end(`got ${s.bytes}`) })
    req.on('error', () => {})
  })
  server.on('connection', () => { connections++ })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, connections: () => connections }
}

t.test('a declared length over the cap: 413 and the upstream sees nothing', async (t) => {
  const up = await countingUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'up', prefix: '/up', upstream: up.url, auth: 'public', maxBodyBytes: CAP }]))
  const res = await rawRequest(gw.url, requestBytes('POST', '/up/x', [['Host', 'a.example'], ['Content-Length', String(CAP + 1)]], 'x'.repeat(CAP + 1)))
  t.equal(res.status, 413)
  t.equal(res.json().code, 'payload_too_large')
  t.equal(res.headers.connection, 'close', 'the connection closes (the rest of the body is not read)')
  t.equal(up.seen.length, 0, 'no request upstream')
  t.equal(up.connections(), 0, 'not even a connection')

  const exact = await rawRequest(gw.url, requestBytes('POST', '/up/x', [['Host', 'a.example'], ['Content-Length', String(CAP)]], 'x'.repeat(CAP)))
  t.equal(exact.status, 200, 'exactly the cap passes')
  t.equal(exact.body.toString(), `got ${CAP}`)
})

t.test('a chunked body over the cap: 413, and the upstream never has more than the cap', async (t) => {
  const up = await countingUpstream(t)
  // streamed: the upstream sees the body as it comes (a route that reads bodies whole sends none
  // over the cap at all: fix-slow-body-holds-upstream)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'up', prefix: '/up', upstream: up.url, auth: 'public', maxBodyBytes: CAP, requestBuffering: false }]))

  // all at once, in chunks of 300 bytes
  const res = await rawRequest(gw.url, requestBytes('POST', '/up/all', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], chunked(Array(8).fill('y'.repeat(300)))))
  t.equal(res.status, 413, 'all at once: 413')
  t.equal(res.json().code, 'payload_too_large')
  t.ok((up.seen[0]?.bytes ?? 0) <= CAP, `all at once: the upstream saw ${up.seen[0]?.bytes ?? 0} bytes, not more than the cap`)
  t.notOk(up.seen[0]?.complete, 'and never a complete body')

  // in two steps: 800 bytes reach the upstream, the next 400 would cross the cap
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('POST', '/up/steps', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']]))
  await client.send(Buffer.from(`320\r\n${'z'.repeat(800)}\r\n`))
  await until('800 bytes upstream', () => up.seen.find(s => s.url === '/up/steps')?.bytes === 800)
  await client.send(Buffer.from(`190\r\n${'z'.repeat(400)}\r\n`))
  const stepped = await client.response()
  t.equal(stepped.status, 413, 'stepwise: 413 once the cap is crossed')
  t.equal(stepped.json().code, 'payload_too_large')
  t.equal(stepped.headers.connection, 'close')
  const s = up.seen.find(x => x.url === '/up/steps')
  t.equal(s?.bytes, 800, 'the upstream got only what was under the cap')
  t.notOk(s?.complete, 'and saw its request broken off, not ended')

  // exactly the cap, chunked: passes
  const exact = await rawRequest(gw.url, requestBytes('POST', '/up/exact', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], chunked(['a'.repeat(600), 'b'.repeat(400)])))
  t.equal(exact.status, 200, 'exactly the cap, chunked: passes')
  t.equal(exact.body.toString(), `got ${CAP}`)
})

t.test('maxBodyBytes: 0 refuses every body and lets bodiless requests through', async (t) => {
  const up = await countingUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'up', prefix: '/up', upstream: up.url, auth: 'public', maxBodyBytes: 0 }]))
  t.equal((await rawRequest(gw.url, requestBytes('POST', '/up/x', [['Host', 'a.example'], ['Content-Length', '1']], 'x'))).status, 413)
  t.equal((await rawRequest(gw.url, requestBytes('POST', '/up/x', [['Host', 'a.example'], ['Transfer-Encoding', 'chunked']], chunked(['x'])))).status, 413)
  t.equal((await rawRequest(gw.url, requestBytes('POST', '/up/x', [['Host', 'a.example'], ['Content-Length', '0']]))).status, 200)
  t.equal((await rawRequest(gw.url, requestBytes('GET', '/up/x', [['Host', 'a.example']]))).status, 200)
})

t.test('the default cap (10 MiB) applies without any setting', async (t) => {
  const up = await countingUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'up', prefix: '/up', upstream: up.url, auth: 'public' }]))
  const res = await rawRequest(gw.url, requestBytes('PUT', '/up/x', [['Host', 'a.example'], ['Content-Length', String(10 * 1024 * 1024 + 1)]]))
  t.equal(res.status, 413, 'a declared 10 MiB + 1 byte: 413')
  t.equal(up.seen.length, 0, 'never upstream')
})
