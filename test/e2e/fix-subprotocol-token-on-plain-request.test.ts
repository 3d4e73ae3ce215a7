/**
 * Regression (fix-subprotocol-token-on-plain-request): browsers send the access token of a
 * WebSocket as the subprotocol `portcullis.bearer.<token>`. The gateway read it whenever a
 * request had an `Upgrade` header, also on a plain request (one without `Connection:
 * upgrade`, which Node and every proxy treat as an ordinary request): the request was
 * authenticated by it, and `Sec-WebSocket-Protocol`, token included, was copied to the
 * upstream — live bearer tokens in upstream logs, valid on other routes. Now the subprotocol
 * counts only in a real handshake, and the header never reaches an upstream outside one.
 * (Found by the identity-provider review of stop 29.)
 */
import t from 'tap'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { RawClient, rawRequest, requestBytes } from '../fixtures/raw-client.js'

const key = makeKey('EdDSA')
const jwt = signWith(key, goodClaims({ scope: 'orders:read' }))

t.test('a plain request: the bearer subprotocol neither authenticates nor reaches the upstream', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
  ]))
  const send = async (target: string, headers: Array<[string, string]>): Promise<{ status: number, code: unknown, seen: Record<string, unknown> | undefined }> => {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes('GET', target, [['Host', 'gateway.test'], ...headers]))
    const body = res.body.toString()
    return { status: res.status, code: body.startsWith('{') ? JSON.parse(body).code : undefined, seen: upstream.requests[before]?.headers as Record<string, unknown> | undefined }
  }
  const protocol: Array<[string, string]> = [['Upgrade', 'websocket'], ['Sec-WebSocket-Protocol', `portcullis, portcullis.bearer.${jwt}`]]

  const required = await send('/api/orders', protocol)
  t.equal(required.status, 401, 'a required route: the subprotocol token does not authenticate a plain request')
  t.equal(required.code, 'missing_token')
  t.equal(required.seen, undefined, 'the upstream saw nothing')

  const open = await send('/open/x', protocol)
  t.equal(open.status, 200, 'a public route passes the request')
  t.equal(open.seen?.['sec-websocket-protocol'], undefined, 'without Sec-WebSocket-Protocol')
  t.notOk(JSON.stringify(open.seen).includes(jwt), 'the token is nowhere in what the upstream got')

  const both = await send('/api/orders', [['Authorization', `Bearer ${jwt}`], ['Sec-WebSocket-Protocol', `portcullis.bearer.${jwt}`]])
  t.equal(both.status, 200, 'Authorization authenticates as always')
  t.equal(both.seen?.['sec-websocket-protocol'], undefined, 'the subprotocol header beside it is not forwarded')
  t.notOk(JSON.stringify(both.seen).includes(jwt), 'the token is nowhere in what the upstream got')

  const other = await send('/open/x', [['Sec-WebSocket-Protocol', 'chat']])
  t.equal(other.seen?.['sec-websocket-protocol'], undefined, 'no Sec-WebSocket-Protocol outside a handshake at all')
})

t.test('control: a real handshake is still authenticated by the subprotocol', async (t) => {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'required' }]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('GET', '/live/x', [['Host', 'gateway.test'], ['Connection', 'Upgrade'], ['Upgrade', 'websocket'],
    ['Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ=='], ['Sec-WebSocket-Version', '13'], ['Sec-WebSocket-Protocol', `portcullis, portcullis.bearer.${jwt}`]]))
  await client.waitFor('\r\n\r\n')
  t.match(client.received.toString('latin1'), /^HTTP\/1.1 101 /, 'the handshake is authenticated and goes through')
  t.equal(upstream.upgrades.length, 1, 'and reaches the upstream')
})
