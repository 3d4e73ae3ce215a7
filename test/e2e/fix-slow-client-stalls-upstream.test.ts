import t, { type Test } from 'tap'
import type { ServerResponse } from 'node:http'
import { startUpstream, type Recorded } from '../fixtures/upstream.js'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { RawClient, rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { until } from '../fixtures/until.js'

// Issue 8, item 7: clients that never read their response stalled an upstream for everyone.
// With `connections: 2`, two sockets that requested a big body and never read left a third
// request unanswered (undici pauses its body timeout while the client socket is full, the
// pool queue was unbounded, and timeouts started only once a request had a socket).
// Now: server.writeTimeout drops a client that stops reading (freeing its upstream
// connection), routes[].queueLimit bounds the wait for a connection (503 upstream_busy +
// Retry-After), the route timeout counts from acceptance, and routes[].idleTimeout bounds
// the gap between body chunks separately, so SSE and long polls are not cut at the timeout.

const key = makeKey('EdDSA')
const CHUNK = Buffer.alloc(64 * 1024, 'x')

interface Behaviour {
  /** responses whose connection closed before they ended (the gateway gave up on them) */
  aborted: string[]
  /** requests whose handler started */
  started: string[]
  /** let /hang answer */
  release: () => void
}

/** an upstream with the slow shapes these tests need */
async function slowUpstream (t: Test): Promise<{ url: string, requests: Recorded[], b: Behaviour }> {
  const held: ServerResponse[] = []
  const b: Behaviour = {
    aborted: [],
    started: [],
    release: () => { for (const res of held.splice(0)) res.end('released') },
  }
  const upstream = await startUpstream((rec, res) => {
    const path = rec.url
    b.started.push(path)
    res.on('close', () => { if (!res.writableFinished) b.aborted.push(path) })
    if (path.startsWith('/api/endless')) {
      // as much as the gateway will take, for as long as it takes it
      res.writeHead(200, { 'content-type': 'application/octet-stream' })
      const pump = (): void => { while (!res.destroyed && res.write(CHUNK)) { /* fill */ } }
      res.on('drain', pump)
      pump()
    } else if (path.startsWith('/api/hang')) {
      held.push(res)
    } else if (path.startsWith('/api/trickle')) {
      // headers at once, then a chunk every 100 ms for 1.5 s
      res.writeHead(200, { 'content-type': 'text/plain' })
      let n = 0
      const timer = setInterval(() => {
        if (res.destroyed) { clearInterval(timer); return }
        res.write(`tick ${n}\n`)
        if (++n === 15) { clearInterval(timer); res.end() }
      }, 100)
    } else if (path.startsWith('/api/sse')) {
      // server-sent events with a pause far longer than the route timeout (undici's body
      // timer ticks at ~0.5 s resolution, so the pause must clear a second to be conclusive)
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: 0\n\n')
      const timer = setTimeout(() => { if (!res.destroyed) res.end('data: 1\n\n') }, 1500)
      res.on('close', () => clearTimeout(timer))
    } else if (path.startsWith('/api/stall')) {
      // one event, then silence
      res.writeHead(200, { 'content-type': 'text/event-stream' })
      res.write('data: first\n\n')
    } else {
      res.setHeader('content-type', 'application/json')
      res.end(JSON.stringify({ ok: true, url: path }))
    }
  })
  t.teardown(() => { b.release(); return upstream.close() })
  return { url: upstream.url, requests: upstream.requests, b }
}

/** a request's outcome, or 'pending' when it has none within `ms` (the test must not hang) */
async function within<T> (ms: number, p: Promise<T>): Promise<T | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([p, new Promise<'pending'>(resolve => { timer = setTimeout(() => resolve('pending'), ms) })])
  clearTimeout(timer)
  return r
}

t.test('clients that never read are dropped after writeTimeout, and the upstream serves others again', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', connections: 2, timeout: '10s' },
  ], { server: { writeTimeout: '1s' } }))
  // two clients ask for an endless body and never read a byte of it
  const stuck = await Promise.all([RawClient.connect(gw.url, { paused: true }), RawClient.connect(gw.url, { paused: true })])
  t.teardown(() => { for (const c of stuck) c.destroy() })
  for (const c of stuck) await c.send(requestBytes('GET', '/api/endless', [['Host', 'a.example']]))
  await until('both upstream connections busy', () => up.b.started.filter(p => p === '/api/endless').length === 2, 5000)

  // a third request needs one of the two connections
  const startedAt = Date.now()
  const third = await within(6000, raw(gw.url, '/api/next'))
  const tookMs = Date.now() - startedAt
  t.not(third, 'pending', 'the third request is answered')
  if (third === 'pending') return
  t.equal(third.status, 200, 'and proxied')
  t.ok(tookMs < 5000, `within writeTimeout and the time to fill the buffers (${tookMs} ms)`)
  await until('both endless responses aborted upstream', () => up.b.aborted.filter(p => p === '/api/endless').length === 2, 3000)
  t.pass('the gateway gave up both stuck responses, freeing their upstream connections')
  // a client that resumes reading finds its response cut, not ended
  for (const c of stuck) {
    c.resume()
    t.not(await within(3000, c.closed), 'pending', 'the stuck client\'s connection was closed by the gateway')
    t.notOk(c.received.includes('\r\n0\r\n\r\n'), 'without the end of a chunked body')
  }
})

t.test('queueLimit: beyond it 503 upstream_busy with Retry-After, and the upstream never sees the request', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', connections: 1, queueLimit: 1, timeout: '10s' },
  ]))
  const first = raw(gw.url, '/api/hang/1') // holds the one connection
  await until('the first request upstream', () => up.b.started.length === 1, 5000)
  const second = raw(gw.url, '/api/hang/2') // waits in the queue (limit 1)
  await new Promise(resolve => setTimeout(resolve, 50))
  const third = await within(2000, raw(gw.url, '/api/x'))
  t.not(third, 'pending', 'the request beyond the queue is answered at once')
  if (third === 'pending') return
  t.equal(third.status, 503, '503')
  t.equal(third.json().code, 'upstream_busy', 'code upstream_busy')
  t.equal(third.headers['retry-after'], '1', 'Retry-After')
  t.same(up.b.started, ['/api/hang/1'], 'the upstream saw only the request holding the connection')
  up.b.release()
  t.equal((await first).status, 200, 'the first finishes')
  await until('the queued request upstream', () => up.b.started.length === 2, 5000)
  up.b.release()
  t.equal((await second).status, 200, 'the queued one is served once the connection is free')
  t.equal((await raw(gw.url, '/api/x')).status, 200, 'and the route serves again')
})

t.test('queueLimit: 0 refuses whatever cannot have a connection at once', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', connections: 1, queueLimit: 0 },
  ]))
  const first = raw(gw.url, '/api/hang/1')
  await until('the first request upstream', () => up.b.started.length === 1, 5000)
  const second = await raw(gw.url, '/api/x')
  t.equal(second.status, 503)
  t.equal(second.json().code, 'upstream_busy')
  t.equal(second.headers['retry-after'], '1')
  up.b.release()
  await first
  t.same(up.b.started, ['/api/hang/1'])
})

t.test('the route timeout counts from acceptance: a request queued behind a busy connection gets its 504 in time', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', connections: 1, timeout: '300ms' },
  ]))
  // a long response holds the one connection; its chunks come every 100 ms, so it is never idle
  const long = raw(gw.url, '/api/trickle')
  await until('the long response upstream', () => up.b.started.length === 1, 5000)
  const startedAt = Date.now()
  const queued = await within(5000, raw(gw.url, '/api/x'))
  const tookMs = Date.now() - startedAt
  t.not(queued, 'pending')
  if (queued === 'pending') return
  t.equal(queued.status, 504, 'the queued request times out')
  t.equal(queued.json().code, 'upstream_timeout', 'code upstream_timeout')
  t.ok(tookMs < 1000, `at the route timeout, not when the connection frees up (${tookMs} ms)`)
  const longRes = await long
  t.equal(longRes.status, 200, 'the long response is not cut by the route timeout (it bounds the wait for headers)')
  t.equal(longRes.body.split('\n').filter(Boolean).length, 15, 'it arrives whole')
  await new Promise(resolve => setTimeout(resolve, 50))
  t.notOk(up.requests.some(r => r.url === '/api/x'), 'the timed-out request never reached the upstream')
})

t.test('SSE: pauses between events longer than the route timeout are fine (idleTimeout, default 5m)', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', timeout: '200ms' },
  ]))
  const res = await within(5000, raw(gw.url, '/api/sse'))
  t.not(res, 'pending')
  if (res === 'pending') return
  t.equal(res.status, 200)
  t.equal(res.body, 'data: 0\n\ndata: 1\n\n', 'every event arrives despite a 1.5 s pause with a 200 ms route timeout')
})

t.test('idleTimeout: an upstream that goes silent mid-body is cut, and its connection closed', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', timeout: '5s', idleTimeout: '300ms' },
  ]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  const startedAt = Date.now()
  await client.send(requestBytes('GET', '/api/stall', [['Host', 'a.example']]))
  await client.waitFor('data: first')
  const how = await within(3000, client.closed)
  const tookMs = Date.now() - startedAt
  t.not(how, 'pending', 'the client connection is closed')
  t.ok(tookMs < 2500, `soon after the idle timeout, give or take undici's timer resolution (${tookMs} ms)`)
  t.notOk(client.received.includes('\r\n0\r\n\r\n'), 'the body is cut, not ended as if complete')
  await until('the upstream response aborted', () => up.b.aborted.includes('/api/stall'), 2000)
  t.pass('the upstream connection was closed')
})

t.test('writeTimeout is a setting of its own: a client reading slowly but steadily is not dropped', async (t) => {
  const up = await slowUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: up.url, auth: 'public', timeout: '200ms' },
  ], { server: { writeTimeout: '1s' } }))
  // 1.5 s of trickle (longer than writeTimeout and the route timeout), read as it comes
  const res = await rawRequest(gw.url, requestBytes('GET', '/api/trickle', [['Host', 'a.example']]))
  t.equal(res.status, 200)
  t.equal(res.body.toString().split('\n').filter(Boolean).length, 15, 'whole')
})
