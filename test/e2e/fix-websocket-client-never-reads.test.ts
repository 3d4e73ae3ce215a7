import t, { type Test } from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocket, WebSocketServer } from 'ws'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'

// A WebSocket client that completes its handshake and then never reads: the gateway paused the
// upstream once the client was 1 MiB behind (memory stays bounded) but kept both connections
// open for ever — server.writeTimeout covered HTTP responses only. Now a client that takes
// nothing of what it is behind on for writeTimeout is dropped, and its upstream with it; a
// client that is merely idle is not.

const key = makeKey('EdDSA')
const CHUNK = Buffer.alloc(64 * 1024, 7)

/** a real `ws` upstream that streams 64 KiB messages to each client while its own buffer allows ("flood"), or echoes */
async function startStreamingUpstream (t: Test): Promise<{ url: string, closedAt: () => number | undefined, sent: () => number }> {
  const server = createServer((_req, res) => { res.writeHead(426).end() })
  const wss = new WebSocketServer({ server })
  let closedAt: number | undefined
  let sent = 0
  wss.on('connection', (ws, req) => {
    ws.on('close', () => { closedAt = Date.now() })
    ws.on('message', (data) => { ws.send(`echo:${String(data)}`) })
    if (req.url?.includes('flood') !== true) return
    const pump = (): void => {
      while (ws.readyState === WebSocket.OPEN && ws.bufferedAmount < 4 * CHUNK.length) { ws.send(CHUNK); sent += CHUNK.length }
      if (ws.readyState === WebSocket.OPEN) setTimeout(pump, 5)
    }
    pump()
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(async () => {
    for (const c of wss.clients) c.terminate()
    await new Promise<void>((resolve) => wss.close(() => resolve()))
    server.closeAllConnections()
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, closedAt: () => closedAt, sent: () => sent }
}

function opened (url: string, token: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers: { authorization: `Bearer ${token}` }, handshakeTimeout: 5000 })
    ws.once('open', () => resolve(ws))
    ws.once('error', reject)
    ws.once('unexpected-response', (_req, res) => reject(new Error(`upgrade refused: ${String(res.statusCode)}`)))
  })
}

t.test('fix-websocket-client-never-reads: a client that stops reading is dropped after writeTimeout, and its upstream with it', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'required' },
  ], { server: { writeTimeout: '1s' } }))
  const token = signWith(key, goodClaims({ sub: 'alice' }))

  const client = await opened(`${gw.wsUrl}/live/flood`, token)
  t.teardown(() => client.terminate())
  const clientClosed = new Promise<number>(resolve => client.once('close', () => resolve(Date.now())))
  client.on('error', () => {})
  // the client's socket is never read again: the kernel's buffers fill, then the gateway's
  ;(client as unknown as { _socket: { pause: () => void } })._socket.pause()
  const t0 = Date.now()
  for (let i = 0; i < 300 && upstream.closedAt() === undefined; i++) await new Promise(resolve => setTimeout(resolve, 50))
  const closedAt = upstream.closedAt()
  t.ok(closedAt !== undefined, `the upstream connection was closed (after ${closedAt === undefined ? 'more than 15 s' : `${closedAt - t0} ms`}; writeTimeout 1 s)`)
  t.ok(upstream.sent() < 64 * 1024 * 1024, `the upstream was paused meanwhile (${Math.round(upstream.sent() / 1024 / 1024)} MiB sent)`)
  ;(client as unknown as { _socket: { resume: () => void } })._socket.resume()
  const clientAt = await Promise.race([clientClosed, new Promise<number>(resolve => setTimeout(() => resolve(Infinity), 5000))])
  t.ok(Number.isFinite(clientAt), 'the client connection was closed too')
})

t.test('fix-websocket-client-never-reads: an idle client (nothing to read) is not timed out', async (t) => {
  const upstream = await startStreamingUpstream(t)
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'required' },
  ], { server: { writeTimeout: '1s' } }))
  const token = signWith(key, goodClaims({ sub: 'alice' }))
  const client = await opened(`${gw.wsUrl}/live/quiet`, token)
  t.teardown(() => client.terminate())
  await new Promise(resolve => setTimeout(resolve, 2500))
  t.equal(client.readyState, WebSocket.OPEN, 'still open after 2.5 s idle (writeTimeout 1 s)')
  const echo = new Promise<string>(resolve => client.once('message', (d) => resolve(String(d))))
  client.send('still here')
  t.equal(await echo, 'echo:still here')
  t.equal(upstream.closedAt(), undefined, 'the upstream connection is open')
})
