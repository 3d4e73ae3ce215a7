import t from 'tap'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'

// Found by an adversarial review after issue 8: the proxy opened the upstream WebSocket first
// and only then let `ws` check the client's handshake. A handshake `ws` refuses (an h2c
// upgrade, no Sec-WebSocket-Key, an unknown version, a POST) got its 400/405 — but the
// upstream connection stayed open, outside LiveSockets, for ever: 100 such requests on a
// public route left 100 open upstream WebSockets. A POST upgrade was authorized under the
// `*` rule, and the upstream got a GET handshake the GET rule would have refused.
// Now the handshake is checked whole at the edge (src/pipeline/edge.ts checkUpgrade) before
// anything is sent upstream (and a client socket destroyed before its handshake completes
// takes the upstream connection with it, src/proxy/websocket.ts).

const key = makeKey('EdDSA')
const KEY = 'dGhlIHNhbXBsZSBub25jZQ=='

function upgrade (method: string, path: string, extra: Array<[string, string]>, drop: string[] = []): Buffer {
  const headers: Array<[string, string]> = [
    ['Host', 'gateway.test'],
    ['Connection', 'Upgrade'],
    ['Upgrade', 'websocket'],
    ['Sec-WebSocket-Key', KEY],
    ['Sec-WebSocket-Version', '13'],
  ].filter(([n]) => !drop.includes(n as string)) as Array<[string, string]>
  for (const [n, v] of extra) {
    const i = headers.findIndex(([name]) => name.toLowerCase() === n.toLowerCase())
    if (i === -1) headers.push([n, v])
    else headers[i] = [n, v]
  }
  return requestBytes(method, path, headers)
}

t.test('a handshake the gateway would refuse never reaches the upstream', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'public' },
    { name: 'feed', prefix: '/feed', upstream: upstream.url, websocket: true, auth: 'required', scopes: { GET: ['live:admin'], '*': ['live:basic'] } },
  ]))
  const basic = `Bearer ${signWith(key, goodClaims({ scope: 'live:basic' }))}`
  const cases: Array<[string, Buffer]> = [
    ['h2c upgrade', requestBytes('GET', '/live', [['Host', 'gateway.test'], ['Connection', 'Upgrade, HTTP2-Settings'], ['Upgrade', 'h2c'], ['HTTP2-Settings', 'AAMAAABkAAQCAAAAAAIAAAAA']])],
    ['no Sec-WebSocket-Key', upgrade('GET', '/live', [], ['Sec-WebSocket-Key'])],
    ['a malformed Sec-WebSocket-Key', upgrade('GET', '/live', [['Sec-WebSocket-Key', 'short']])],
    ['two Sec-WebSocket-Key lines', Buffer.concat([upgrade('GET', '/live', [['Sec-WebSocket-Key', KEY], ['X-Pad', '1']]).subarray(0, -2), Buffer.from(`Sec-WebSocket-Key: ${KEY}\r\n\r\n`)])],
    ['version 99', upgrade('GET', '/live', [['Sec-WebSocket-Version', '99']])],
    ['no version', upgrade('GET', '/live', [], ['Sec-WebSocket-Version'])],
    ['a subprotocol that is not a token', upgrade('GET', '/live', [['Sec-WebSocket-Protocol', 'chat v1']])],
    ['a subprotocol offered twice', upgrade('GET', '/live', [['Sec-WebSocket-Protocol', 'chat.v1, chat.v1']])],
    ['Upgrade: websocket, h2c', upgrade('GET', '/live', [['Upgrade', 'websocket, h2c']])],
    ['a POST upgrade on a public route', upgrade('POST', '/live', [['Content-Length', '0']])],
    ['a POST upgrade authorized only under "*"', upgrade('POST', '/feed/x', [['Authorization', basic], ['Content-Length', '0']])],
  ]
  for (const [label, bytes] of cases) {
    for (let i = 0; i < 5; i++) {
      const client = await RawClient.connect(gw.url)
      await client.send(bytes)
      const res = await client.response()
      client.destroy()
      if (i > 0) continue
      t.equal(res.status, 400, `${label}: 400`)
      t.equal(res.json().code, 'bad_upgrade', `${label}: bad_upgrade`)
    }
  }
  // before the fix each refusal came from `ws` once the upstream WebSocket was open, so the
  // connections were there before the answers
  t.equal(upstream.connections(), 0, 'the upstream got no connection at all')
  t.equal(upstream.upgrades.length, 0, 'and no handshake')

  // the real thing still works, under the GET rule
  const admin = `Bearer ${signWith(key, goodClaims({ scope: 'live:admin' }))}`
  for (const [label, auth, status] of [['GET, live:basic', basic, 403], ['GET, live:admin', admin, 101]] as const) {
    const client = await RawClient.connect(gw.url)
    await client.send(upgrade('GET', '/feed/x', [['Authorization', auth]]))
    await client.waitFor('\r\n\r\n')
    t.match(client.received.toString('latin1'), new RegExp(`^HTTP/1.1 ${status} `), `${label}: ${status}`)
    client.destroy()
  }
})
