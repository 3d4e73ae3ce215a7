import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startWsUpstream, type WsUpstream } from '../fixtures/ws-upstream.js'
import { beginWs, echoes, handshake } from '../fixtures/ws-client.js'
import { waitFor } from '../upstream/helpers.js'
import { loadConfigText } from '../../src/config/load.js'

// fix-websocket-handshake-straddles-reload (left by stop 31): a reload checks the WebSockets
// open at that moment against the new configuration, but a handshake the old configuration
// admitted whose upstream had not answered yet was not among them. When the upstream answered
// after the reload's check, the socket opened and relayed under the old rules — a route whose
// scopes were just tightened, or that was just removed, kept a socket for as long as its token
// lived. Now each socket carries the configuration that admitted it, and one admitted by a
// configuration a reload has since replaced and checked is checked by the newer one as it
// opens. Real parts: a `ws` upstream on 127.0.0.1 that holds its handshake answers until told,
// a real gateway reloaded between the admission and the upstream's 101.

const key = makeKey('EdDSA')

async function setUp (t: Test): Promise<{ upstream: WsUpstream, gw: Awaited<ReturnType<typeof startGateway>>, reload: (routes: unknown[]) => Promise<void> }> {
  const upstream = await startWsUpstream({ holdHandshakes: true })
  t.teardown(() => upstream.close())
  const route = { name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required' }
  const gw = await startGateway(t, baseConfig(key, [route]))
  return {
    upstream,
    gw,
    reload: async (routes) => {
      const result = await gw.gateway.reload(loadConfigText(stringify(baseConfig(key, routes)), { env: {} }))
      t.equal(result.ok, true, 'reloaded')
      // the reload's check of the open sockets runs once the new key sets settle: the
      // straddling handshakes must complete after it, or the check itself would see them
      t.ok(await waitFor(() => gw.gateway.live.checkedGeneration === gw.gateway.runtime.generation), "the reload's check of the open sockets has run")
    },
  }
}

t.test('a handshake admitted before a reload that tightens its route is closed as it opens', async (t) => {
  const { upstream, gw, reload } = await setUp(t)
  const lacking = beginWs(t, `${gw.wsUrl}/ws/a`, signWith(key, goodClaims({ scope: 'orders:read' })))
  const allowed = beginWs(t, `${gw.wsUrl}/ws/b`, signWith(key, goodClaims({ scope: 'chat' })))
  t.ok(await waitFor(() => upstream.held() === 2), 'both handshakes were admitted and reached the upstream')
  t.equal(gw.gateway.live.size, 0, 'neither is open yet: the reload has nothing to check')

  await reload([{ name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required', scopes: { '*': ['chat'] } }])
  upstream.release()
  t.same(await lacking.outcome, { opened: true, code: 1008, reason: 'the access token lacks a scope this route requires' },
    'the socket whose token lacks the new scope is closed as it opens (it relayed on before the fix)')
  t.same(await allowed.outcome, { opened: true }, 'the socket whose token has the scope stays open')
  t.ok(await echoes(allowed.ws, 'kept'), 'and relays')
  t.equal(gw.gateway.live.size, 1, 'one socket tracked')
})

t.test('a handshake admitted before a reload that removes its route is closed as it opens', async (t) => {
  const { upstream, gw, reload } = await setUp(t)
  const pending = beginWs(t, `${gw.wsUrl}/ws/a`, signWith(key, goodClaims()))
  t.ok(await waitFor(() => upstream.held() === 1), 'the handshake reached the upstream')
  await reload([{ name: 'other', prefix: '/other', upstream: upstream.url, websocket: true, auth: 'required' }])
  upstream.release()
  t.same(await pending.outcome, { opened: true, code: 1008, reason: 'the new configuration has no WebSocket route for this path' },
    'closed: the route is gone')
  t.equal(gw.gateway.live.size, 0, 'nothing tracked')
})

t.test('a handshake admitted before a reload that leaves its route alone stays open', async (t) => {
  const { upstream, gw, reload } = await setUp(t)
  const pending = beginWs(t, `${gw.wsUrl}/ws/a`, signWith(key, goodClaims()))
  t.ok(await waitFor(() => upstream.held() === 1), 'the handshake reached the upstream')
  await reload([
    { name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required' },
    { name: 'more', prefix: '/more', upstream: upstream.url, websocket: true, auth: 'required' },
  ])
  upstream.release()
  t.same(await pending.outcome, { opened: true }, 'the socket opens and stays')
  t.ok(await echoes(pending.ws, 'kept'), 'and relays')
  t.equal(gw.gateway.live.size, 1, 'tracked')
  const late = handshake(`${gw.wsUrl}/more/a`, signWith(key, goodClaims()))
  t.ok(await waitFor(() => upstream.held() === 1), 'a handshake under the new configuration reaches the upstream')
  upstream.release()
  t.equal(await late, 101, 'and opens: a socket admitted by the configuration in force is not checked again')
})
