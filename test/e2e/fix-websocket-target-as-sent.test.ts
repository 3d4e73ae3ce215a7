import t from 'tap'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { rawRequest, RawClient, requestBytes } from '../fixtures/raw-client.js'

// fix-websocket-target-as-sent: a plain route forwards the request target byte for byte (the
// path that was authorized is the path that is forwarded), but a WebSocket upgrade reached
// its upstream re-encoded: the `ws` client builds the handshake's target from a WHATWG URL,
// which percent-encodes `"`, `<`, `>`, `` ` ``, `{`, `}` in a path and `'`, `"`, `<`, `>` in
// the query of a ws: URL. `/live/{id}` arrived as `/ws/%7Bid%7D` — another spelling than the
// one checked and matched, which an upstream that routes or signs on the raw target reads
// as another resource. Now the upgrade carries the target as sent, like a plain request.

const key = makeKey('EdDSA')

/** what follows the route's prefix; each is a target Node's HTTP/1.1 parser and the edge accept */
const SUFFIXES = [
  '/x/{id}',
  '/x/%7Bid%7D',
  '/x/"quoted"',
  '/x/<tag>',
  '/x/`tick`',
  '/x/a|b^c',
  "/x?q='v'",
  '/x?w="x"&z=<y>&b={}',
  '/x/{a}?b={c}',
]

t.test('fix-websocket-target-as-sent: the upgrade reaches the upstream as the client spelled it, as a plain request does', async (t) => {
  const ws = await startWsUpstream()
  t.teardown(() => ws.close())
  const plain = await startUpstream()
  t.teardown(() => plain.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'live', prefix: '/live', upstream: ws.url, rewritePrefix: '/ws', websocket: true, auth: 'public' },
    { name: 'plain', prefix: '/plain', upstream: plain.url, rewritePrefix: '/ws', auth: 'public' },
  ]))
  const upgrade: Array<[string, string]> = [['Host', 'gateway.test'], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==']]

  for (const suffix of SUFFIXES) {
    // the control: a plain route forwards these bytes unchanged
    const res = await rawRequest(gw.url, requestBytes('GET', `/plain${suffix}`, [['Host', 'gateway.test']]))
    t.equal(res.status, 200, `${suffix}: a plain request passes`)
    t.equal(plain.requests.at(-1)?.url, `/ws${suffix}`, `${suffix}: the plain upstream gets it as sent`)

    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.socket.destroy())
    const seen = ws.upgrades.length
    await client.send(requestBytes('GET', `/live${suffix}`, upgrade))
    t.equal((await client.response()).status, 101, `${suffix}: the upgrade is accepted`)
    t.equal(ws.upgrades.length, seen + 1, `${suffix}: one handshake upstream`)
    t.equal(ws.upgrades.at(-1)?.url, `/ws${suffix}`, `${suffix}: the WebSocket upstream gets it as sent`)
    client.socket.destroy()
  }
})
