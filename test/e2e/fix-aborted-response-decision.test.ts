import t, { type Test } from 'tap'
import { Writable } from 'node:stream'
import type { ServerResponse } from 'node:http'
import { pino } from 'pino'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway, type StartedGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'
import { until } from '../fixtures/until.js'

// Issue 8, item 9: a proxied response that never completed (the client went away mid-body, or
// the upstream broke off) left no decision line and no metric: Fastify runs its onResponse
// hooks on the response's `finish`, which never comes, and onRequestAbort only when the
// request body was not read (so never for a POST whose body had gone upstream). Every
// request gets its line: 499 client_closed when the client left, the upstream error's
// status and code when the upstream broke off.

const key = makeKey('EdDSA')

interface Line { reqId: string, route: string | null, granted: boolean, reason: string, status: number, method: string, path: string }

async function gatewayWithLog (t: Test, upstreamUrl: string, route: Record<string, unknown> = {}): Promise<{ gw: StartedGateway, lines: () => Line[] }> {
  let out = ''
  const sink = new Writable({ write (chunk, _enc, cb) { out += String(chunk); cb() } })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstreamUrl, auth: 'public', ...route }]), {
    logger: pino({ level: 'info' }, sink),
  })
  return { gw, lines: () => out.trim().split('\n').filter(Boolean).map(l => JSON.parse(l)).filter(l => l.msg === 'decision') }
}

/** an upstream that streams a chunk every 20 ms until the gateway goes away, or breaks off on /api/break */
async function streamingUpstream (t: Test): Promise<{ url: string, aborted: string[], started: string[] }> {
  const aborted: string[] = []
  const started: string[] = []
  const upstream = await startUpstream((rec, res: ServerResponse) => {
    started.push(rec.url)
    res.on('close', () => { if (!res.writableFinished) aborted.push(rec.url) })
    if (rec.url.startsWith('/api/hang')) return
    res.writeHead(200, { 'content-type': 'text/plain' })
    res.write('first\n')
    if (rec.url.startsWith('/api/break')) { setTimeout(() => res.socket?.destroy(), 30); return }
    const timer = setInterval(() => { if (res.destroyed) clearInterval(timer); else res.write('more\n') }, 20)
  })
  t.teardown(() => upstream.close())
  return { url: upstream.url, aborted, started }
}

t.test('the client leaves mid-body: 499 client_closed, for a GET and for a POST whose body went upstream', async (t) => {
  const up = await streamingUpstream(t)
  const { gw, lines } = await gatewayWithLog(t, up.url)
  for (const [method, body] of [['GET', ''], ['POST', 'payload'], ['PUT', 'x'.repeat(10_000)]] as const) {
    const id = `left-${method}`
    const client = await RawClient.connect(gw.url)
    const headers: Array<[string, string]> = [['Host', 'a.example'], ['X-Request-Id', id]]
    if (body !== '') headers.push(['Content-Length', String(body.length)])
    await client.send(requestBytes(method, '/api/stream', headers, body))
    await client.waitFor('first')
    client.destroy()
    await until(`the decision line of ${method}`, () => lines().some(l => l.reqId === id))
    const line = lines().find(l => l.reqId === id)
    t.match(line, { route: 'api', granted: true, reason: 'client_closed', status: 499, method, path: '/api/stream' }, `${method}: one line, 499 client_closed`)
    await until(`the upstream request of ${method} aborted`, () => up.aborted.includes('/api/stream') && up.aborted.filter(u => u === '/api/stream').length >= ['GET', 'POST', 'PUT'].indexOf(method) + 1)
    t.pass(`${method}: the upstream request was aborted`)
  }
  t.equal(lines().filter(l => l.reqId.startsWith('left-')).length, 3, 'exactly one line per request')
})

t.test('the client leaves before the upstream answered: 499, and the upstream request is aborted', async (t) => {
  const up = await streamingUpstream(t)
  const { gw, lines } = await gatewayWithLog(t, up.url)
  const client = await RawClient.connect(gw.url)
  await client.send(requestBytes('POST', '/api/hang', [['Host', 'a.example'], ['X-Request-Id', 'gone-early'], ['Content-Length', '2']], 'hi'))
  await until('the upstream got the request', () => up.started.includes('/api/hang'))
  client.destroy()
  await until('the decision line', () => lines().some(l => l.reqId === 'gone-early'))
  t.match(lines().find(l => l.reqId === 'gone-early'), { reason: 'client_closed', status: 499 })
  await until('the upstream request aborted', () => up.aborted.includes('/api/hang'))
  t.pass('the upstream request was aborted')
})

t.test('the upstream breaks off mid-body: the client sees a cut response, the line says why', async (t) => {
  const up = await streamingUpstream(t)
  const { gw, lines } = await gatewayWithLog(t, up.url)
  for (const [method, body] of [['GET', ''], ['POST', 'payload']] as const) {
    const id = `broken-${method}`
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    const headers: Array<[string, string]> = [['Host', 'a.example'], ['X-Request-Id', id]]
    if (body !== '') headers.push(['Content-Length', String(body.length)])
    await client.send(requestBytes(method, '/api/break', headers, body))
    await client.closed
    t.ok(client.received.includes('first'), `${method}: the response had started`)
    t.notOk(client.received.includes('\r\n0\r\n\r\n'), `${method}: and is cut, not ended as if complete`)
    await until(`the decision line of ${method}`, () => lines().some(l => l.reqId === id))
    t.match(lines().find(l => l.reqId === id), { route: 'api', reason: 'upstream_unavailable', status: 502 }, `${method}: 502 upstream_unavailable`)
  }
})

t.test('the metrics count aborted responses too', async (t) => {
  const up = await streamingUpstream(t)
  const { gw, lines } = await gatewayWithLog(t, up.url)
  const client = await RawClient.connect(gw.url)
  await client.send(requestBytes('POST', '/api/stream', [['Host', 'a.example'], ['X-Request-Id', 'metric-1'], ['Content-Length', '1']], 'x'))
  await client.waitFor('first')
  client.destroy()
  await until('the decision line', () => lines().some(l => l.reqId === 'metric-1'))
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text()
  const counted = text.split('\n').filter(l => l.startsWith('portcullis_requests_total') && l.includes('route="api"') && l.includes('status="499"'))
  t.equal(counted.length, 1, 'a requests_total series for route api, status 499')
  t.match(counted[0], /client_closed/, 'with reason client_closed')
  t.match(counted[0], / 1$/, 'counted once')
})
