import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { closeOf, echoes, handshake, openWs } from '../fixtures/ws-client.js'
import { idpIssuer, signAsIdp, waitFor } from '../upstream/helpers.js'
import { loadConfigText } from '../../src/config/load.js'
import type { GatewayConfig } from '../../src/config/types.js'

// Left open by stop 30 and closed here: a reload re-verified each open WebSocket's token but
// not the route it was opened on. An operator who tightened a route's scopes (or made it
// require a token, or removed it) after finding it too open saw new handshakes refused while
// every socket already open on it kept relaying until its token expired — and anonymous
// sockets, which have no token, for ever. Now a reload checks every open socket as its
// handshake would be checked under the new configuration: the route its path matches, GET,
// the token (or its absence), issuer and scopes; and a surviving socket's expiry follows the
// new configuration's clock skew.

const key = makeKey('EdDSA')

function parsed (config: Record<string, any>): GatewayConfig {
  return loadConfigText(stringify(config), { env: {} })
}

async function start (t: Test, routes: (upstream: string) => unknown[]): Promise<{ gw: Awaited<ReturnType<typeof startGateway>>, reload: (routes: (upstream: string) => unknown[]) => Promise<void> }> {
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, routes(upstream.url)))
  return {
    gw,
    reload: async (next) => { t.equal((await gw.gateway.reload(parsed(baseConfig(key, next(upstream.url))))).ok, true, 'reloaded') },
  }
}

t.test("a reload that tightens a route's scopes closes the open sockets whose tokens lack them", async (t) => {
  const { gw, reload } = await start(t, up => [{ name: 'chat', prefix: '/ws', upstream: up, websocket: true, auth: 'required' }])
  const chat = signWith(key, goodClaims({ scope: 'chat' }))
  const reader = signWith(key, goodClaims({ scope: 'orders:read' }))
  const allowed = await openWs(t, `${gw.wsUrl}/ws/a`, chat)
  const lacking = await openWs(t, `${gw.wsUrl}/ws/b`, reader)
  t.ok(await echoes(lacking.ws, 'before'), 'any valid token opens a socket on the route as first configured')

  await reload(up => [{ name: 'chat', prefix: '/ws', upstream: up, websocket: true, auth: 'required', scopes: { '*': ['chat'] } }])
  t.same(await closeOf(lacking), { code: 1008, reason: 'the access token lacks a scope this route requires' }, 'the socket whose token lacks the new scope is closed')
  t.ok(await echoes(allowed.ws, 'kept'), 'the socket whose token has it keeps relaying')
  t.equal(await handshake(`${gw.wsUrl}/ws/c`, reader), 403, 'a new handshake with the lacking token is refused the same way')
  t.equal(gw.gateway.live.size, 1, 'one socket left')
})

t.test('a reload that makes a route require a token closes its anonymous sockets', async (t) => {
  const { gw, reload } = await start(t, up => [{ name: 'chat', prefix: '/ws', upstream: up, websocket: true, auth: 'optional' }])
  const anonymous = await openWs(t, `${gw.wsUrl}/ws/a`)
  const signedIn = await openWs(t, `${gw.wsUrl}/ws/b`, signWith(key, goodClaims()))
  t.ok(await echoes(anonymous.ws, 'before'), 'an anonymous socket opens on an optional route')
  t.equal(gw.gateway.live.size, 2, 'anonymous sockets are tracked too')

  await reload(up => [{ name: 'chat', prefix: '/ws', upstream: up, websocket: true, auth: 'required' }])
  t.same(await closeOf(anonymous), { code: 1008, reason: 'the route now requires an access token' }, 'the anonymous socket is closed')
  t.ok(await echoes(signedIn.ws, 'kept'), 'the socket with a token keeps relaying')
  t.equal(await handshake(`${gw.wsUrl}/ws/c`), 401, 'a new anonymous handshake is refused')
})

t.test('a reload that removes a route, or its WebSocket upgrades, closes the sockets open on it', async (t) => {
  const { gw, reload } = await start(t, up => [
    { name: 'chat', prefix: '/ws', upstream: up, websocket: true, auth: 'required' },
    { name: 'lobby', prefix: '/lobby', upstream: up, websocket: true, auth: 'public' },
    { name: 'feed', prefix: '/feed', upstream: up, websocket: true, auth: 'public' },
  ])
  const chat = await openWs(t, `${gw.wsUrl}/ws/a`, signWith(key, goodClaims()))
  const lobby = await openWs(t, `${gw.wsUrl}/lobby/a`)
  const feed = await openWs(t, `${gw.wsUrl}/feed/a`)

  await reload(up => [
    { name: 'chat', prefix: '/ws', upstream: up, websocket: false, auth: 'required' },
    { name: 'feed', prefix: '/feed', upstream: up, websocket: true, auth: 'public' },
  ])
  const gone = { code: 1008, reason: 'the new configuration has no WebSocket route for this path' }
  t.same(await closeOf(chat), gone, 'the route that no longer takes upgrades closes its socket')
  t.same(await closeOf(lobby), gone, 'the removed route closes its (anonymous) socket')
  t.ok(await echoes(feed.ws, 'kept'), 'the unchanged public route keeps its socket')
  t.equal(gw.gateway.live.size, 1, 'one socket left')
})

t.test("a socket that survives a reload expires by the new configuration's clock skew", async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const config = (clockSkew: string): Record<string, any> => ({
    ...baseConfig(key, [{ name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required' }]),
    issuers: [idpIssuer(idp, { clockSkew })],
  })
  const gw = await startGateway(t, config('1m'))
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'), 'keys fetched at start')

  // expires in 4–5 s (room for a loaded machine to re-verify it before then); with a minute
  // of skew the socket would live a minute longer
  const socket = await openWs(t, `${gw.wsUrl}/ws/a`, signAsIdp(idp, { exp: Math.floor(Date.now() / 1000) + 5 }))
  t.ok(await echoes(socket.ws, 'before'), 'the socket relays')
  t.equal((await gw.gateway.reload(parsed(config('0s')))).ok, true, 'reloaded without skew')
  t.ok(await echoes(socket.ws, 'after'), 'the token still verifies: the socket stays open')
  t.same(await closeOf(socket, 8_000), { code: 1008, reason: 'the access token expired' }, 'closed at exp, not at exp + the old skew')
})
