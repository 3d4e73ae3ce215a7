/**
 * fix-upstream-websocket-close-1008: the gateway relayed an upstream's WebSocket close code
 * and reason unchanged, and the client SDK dropped a still-valid token on any 1008 — the
 * gateway's own close when a token expires or is revoked. An upstream closing with 1008
 * (its own policy error, or on purpose) made the README's reconnect recipe refresh in a
 * tight loop (134 rotations in 4 s). Now the gateway relays an upstream's 1008 as 4008
 * (reason kept), so 1008 towards a client is the gateway's alone; the SDK forgets the token
 * only on 1008. The gateway's own 1008 is unchanged: a revocation still closes 1008 and the
 * reconnect refreshes. Real gateway, real `ws` upstream, the SDK with the `ws` package.
 */
import t from 'tap'
import { WebSocket as WsWebSocket } from 'ws'
import { createClient } from '../../src/client/index.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { recorder, startEnv } from '../client/helpers.js'

// literal, not imported: the suite must load against the code before the fix
const WS_POLICY_VIOLATION = 1008
const WS_UPSTREAM_POLICY_VIOLATION = 4008

/** closes the socket with 1008 and the gateway's own words as soon as the client says "bye"; else echoes */
const upstream = await startWsUpstream({
  onMessage: (ws, data) => {
    if (String(data) === 'bye') ws.close(1008, 'the access token expired')
    else ws.send(`echo:${String(data)}`)
  },
})
t.teardown(() => upstream.close())

const env = await startEnv(t, {
  transport: 'body',
  routes: [{ name: 'live', prefix: '/live', upstream: upstream.url, websocket: true, auth: 'required' }],
})

const closed = (ws: WsWebSocket): Promise<{ code: number, reason: string }> =>
  new Promise((resolve) => ws.once('close', (code, reason) => resolve({ code, reason: String(reason) })))
const opened = (ws: WsWebSocket): Promise<boolean> =>
  new Promise((resolve) => { ws.once('open', () => resolve(true)); ws.once('error', () => resolve(false)) })

async function client (t: { teardown: (fn: () => unknown) => void }, name: string): Promise<{ c: ReturnType<typeof createClient>, rec: ReturnType<typeof recorder> }> {
  await env.addUser(name)
  const rec = recorder()
  const c = createClient({ baseUrl: env.gw.url, transport: 'body', fetch: rec.fetch, WebSocket: WsWebSocket })
  t.teardown(() => { c.close() })
  await c.login(name, `pw-${name}`)
  return { c, rec }
}

t.test("an upstream's 1008 reaches the client as 4008, its reason kept", async (t) => {
  const { c } = await client(t, 'ann')
  const ws = new WsWebSocket(`${env.gw.url.replace(/^http/, 'ws')}/live/room`, ['portcullis', `portcullis.bearer.${await c.accessToken()}`])
  const done = closed(ws)
  t.ok(await opened(ws))
  ws.send('bye')
  const close = await done
  t.equal(close.code, WS_UPSTREAM_POLICY_VIOLATION, 'not 1008: that is the gateway\'s')
  t.equal(close.reason, 'the access token expired', "the upstream's reason")
})

t.test("the README's reconnect on an upstream's 1008 never refreshes; the token is kept", async (t) => {
  const { c, rec } = await client(t, 'ben')
  const token = await c.accessToken()
  const codes: number[] = []
  for (let i = 0; i < 5; i++) {
    const ws = await c.webSocket<WsWebSocket>('/live/room')
    const done = closed(ws)
    t.ok(await opened(ws), `socket ${i} opened`)
    ws.send('bye')
    codes.push((await done).code)
  }
  t.same(codes, [4008, 4008, 4008, 4008, 4008], "the upstream's closes")
  t.equal(rec.count('/auth/refresh'), 0, 'no refresh for an upstream\'s close')
  t.equal(await c.accessToken(), token, 'the token is still in use')
})

t.test("the gateway's own close stays 1008, and the reconnect refreshes", async (t) => {
  const { c, rec } = await client(t, 'cyd')
  const before = upstream.upgrades.length
  const ws = await c.webSocket<WsWebSocket>('/live/room')
  const done = closed(ws)
  t.ok(await opened(ws))
  const { jti, exp } = c.claims() as { jti: string, exp: number }
  t.equal((await env.admin('/admin/revocations/jti', { jti, exp })).status, 204)
  t.match(await done, { code: WS_POLICY_VIOLATION, reason: /revoked/ }, 'closed by the gateway with 1008')
  const again = await c.webSocket<WsWebSocket>('/live/room')
  t.teardown(() => { again.terminate() })
  t.equal(rec.count('/auth/refresh'), 1, 'the reconnect refreshed first')
  t.ok(await opened(again), 'and got in')
  t.equal(upstream.upgrades.length - before, 2)
})
