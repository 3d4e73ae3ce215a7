/**
 * The client SDK in cookie mode (browsers) against the REAL gateway, in Node: a fetch
 * wrapper plays the browser around fetch() (helpers.ts `browser`: Origin, Sec-Fetch-Site,
 * cookies only with credentials: 'include', the __Host- rules, Set-Cookie hidden from
 * script). Several clients on one wrapper are several tabs of one browser; they talk over
 * Node 20's BroadcastChannel and share the SDK's in-realm lock (Node 20 has no Web Locks).
 * Also WebSockets through the gateway, whose token travels as a subprotocol, and the
 * gateway's 1008 closes (expiry: its clock moved to just before the token's end; revocation:
 * the admin API).
 */
import t from 'tap'
import { WebSocket as WsWebSocket } from 'ws'
import { createClient, PortcullisError, SessionEndedError } from '../../src/client/index.js'
import type { ClientOptions, PortcullisClient, SessionEndedEvent, WebSocketConstructorLike } from '../../src/client/index.js'
import {
  ACCESS_TTL_SEC, CLOCK_SKEW_SEC, ORIGIN, browser, makeClock, recorder, rejection, startEnv, waitFor,
  type Browser, type Recorder, type TestClock,
} from './helpers.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'

const COOKIE = '__Host-portcullis-rt'
const DUE_SEC = ACCESS_TTL_SEC - 60

const wsUpstream = await startWsUpstream()
t.teardown(() => wsUpstream.close())
const env = await startEnv(t, {
  transport: 'cookie',
  routes: [{ name: 'chat', prefix: '/ws', upstream: wsUpstream.url, websocket: true, auth: 'required' }],
})

let browsers = 0

interface Tab {
  c: PortcullisClient
  ended: SessionEndedEvent[]
}

/** one browser: a cookie jar, a clock, and as many tabs as asked (clients on one channel key) */
function openBrowser (t: Tap, options: { channel?: null, WebSocket?: WebSocketConstructorLike } = {}): { br: Browser, rec: Recorder, clock: TestClock, key: string, tab: () => Tab } {
  const br = browser(ORIGIN)
  const rec = recorder(br.fetch)
  const clock = makeClock(2_000_000)
  const key = `browser-${++browsers}`
  const tab = (): Tab => {
    const opts: ClientOptions = { baseUrl: env.gw.url, transport: 'cookie', fetch: rec.fetch, now: clock, crossTab: { key, ...options.channel === null ? { channel: null } : {} } }
    if (options.WebSocket !== undefined) opts.WebSocket = options.WebSocket
    const c = createClient(opts)
    t.teardown(() => { c.close() })
    const ended: SessionEndedEvent[] = []
    c.on('sessionEnded', (e) => { ended.push(e) })
    return { c, ended }
  }
  return { br, rec, clock, key, tab }
}
type Tap = { teardown: (fn: () => unknown) => void }

const cookieSent = (br: Browser, path: string): Array<string | undefined> => br.log.filter((x) => x.path === path).map((x) => x.cookie)

t.test('login: the refresh token lands in the HttpOnly __Host- cookie; fetch sends only the access token', async (t) => {
  const id = await env.addUser('alice')
  const { br, tab } = openBrowser(t)
  const { c } = tab()
  await c.login('alice', 'pw-alice')
  const cookie = br.jar.get(COOKIE)
  t.ok(cookie, 'the browser stored the cookie (so the SDK sent credentials: include)')
  t.match(cookie?.attrs, { httponly: true, secure: true, path: '/', samesite: 'Strict' })

  const before = env.upstream.requests.length
  t.equal((await c.fetch('/api/me')).status, 200)
  const seen = env.upstream.requests[before]
  t.equal(seen?.headers['x-user-id'], id)
  t.same(cookieSent(br, '/api/me'), [undefined], 'API calls do not carry the refresh cookie')
})

t.test('a body-mode client against a cookie-mode gateway is told so at login', async (t) => {
  await env.addUser('hank')
  const c = createClient({ baseUrl: env.gw.url, transport: 'body' })
  t.teardown(() => { c.close() })
  const err = await rejection(c.login('hank', 'pw-hank'))
  t.ok(err instanceof PortcullisError)
  t.match(err, { code: 'transport_mismatch' })
  t.equal(c.status, 'unknown')
})

t.test('page reload: a new client resumes from the cookie; a page without one gets sessionEnded(no_session)', async (t) => {
  await env.addUser('bob')
  const { br, rec, tab } = openBrowser(t)
  const old = tab()
  await old.c.login('bob', 'pw-bob')
  const before = br.jar.get(COOKIE)?.value
  old.c.close() // the reload: the page and its memory are gone, the cookie stays

  const page = tab()
  t.equal(page.c.status, 'unknown')
  t.equal(await page.c.restore(), true, 'restored')
  t.equal(rec.count('/auth/refresh'), 1)
  t.same(cookieSent(br, '/auth/refresh'), [`${COOKIE}=${before}`], 'the refresh presented the cookie')
  t.not(br.jar.get(COOKIE)?.value, before, 'and the gateway rotated it')
  t.equal((await page.c.fetch('/api/me')).status, 200)

  const stranger = openBrowser(t).tab()
  t.equal(await stranger.c.restore(), false, 'no cookie, no session')
  t.same(stranger.ended, [{ reason: 'no_session', fromOtherTab: false }])
  t.ok(await rejection(stranger.c.fetch('/api/me')) instanceof SessionEndedError)
  t.equal(stranger.ended.length, 1, 'fired once')
})

t.test('two tabs: a login in one is adopted by the other; one refresh between them; a logout ends both', async (t) => {
  await env.addUser('carol')
  const { br, rec, clock, tab } = openBrowser(t)
  const a = tab()
  const b = tab()
  await a.c.login('carol', 'pw-carol')
  t.ok(await waitFor(() => b.c.status === 'active'), 'tab b adopted the token')

  clock.advanceSec(DUE_SEC + 1)
  const all = await Promise.all([a.c.fetch('/api/a'), b.c.fetch('/api/b'), a.c.fetch('/api/a'), b.c.fetch('/api/b')])
  t.same(all.map((r) => r.status), [200, 200, 200, 200])
  t.equal(rec.count('/auth/refresh'), 1, 'one refresh for both tabs')

  await a.c.logout()
  t.equal(br.jar.has(COOKIE), false, 'the gateway cleared the cookie')
  t.ok(await waitFor(() => b.ended.length === 1))
  t.same(b.ended, [{ reason: 'logout', fromOtherTab: true }], 'tab b was told')
  t.same(a.ended, [{ reason: 'logout', fromOtherTab: false }])
  t.ok(await rejection(b.c.fetch('/api/b')) instanceof SessionEndedError)
})

t.test('news of another session\'s end is ignored (a new login crossed it)', async (t) => {
  await env.addUser('ivy')
  const { key, tab } = openBrowser(t)
  const a = tab()
  await a.c.login('ivy', 'pw-ivy')
  const sid = a.c.claims()?.sid
  t.type(sid, 'string')
  const other = new BroadcastChannel(`portcullis:${key}`)
  t.teardown(() => { other.close() })
  other.postMessage({ v: 1, type: 'ended', reason: 'logout_all', sid: 'an-older-session' })
  other.postMessage({ v: 1, type: 'ended', reason: 'logout', sid })
  t.ok(await waitFor(() => a.ended.length > 0))
  t.same(a.ended, [{ reason: 'logout', fromOtherTab: true }], 'the older session\'s news was ignored, this session\'s obeyed')
})

t.test('tabs sharing the lock but no channel: refreshes run one after the other, each presenting the current cookie', async (t) => {
  await env.addUser('dave')
  const { br, rec, clock, tab } = openBrowser(t, { channel: null })
  const a = tab()
  const b = tab()
  await a.c.login('dave', 'pw-dave')
  t.equal(await b.c.restore(), true, 'b resumed from the cookie (no news without a channel)')
  clock.advanceSec(DUE_SEC + 1)
  const all = await Promise.all([a.c.fetch('/api/a'), b.c.fetch('/api/b')])
  t.same(all.map((r) => r.status), [200, 200])
  const sent = cookieSent(br, '/auth/refresh')
  t.equal(rec.count('/auth/refresh'), 3, 'b restore, then one refresh per tab')
  t.equal(new Set(sent).size, sent.length, 'never the same refresh token twice: the gateway\'s reuse detection has nothing to see')
  t.same(a.ended.concat(b.ended), [])
})

/** resolves when the socket opens (true) or fails to (false) */
const opened = (ws: WsWebSocket): Promise<boolean> => new Promise((resolve) => {
  ws.once('open', () => resolve(true))
  ws.once('error', () => resolve(false))
})
/** take it right after creating the socket: a refused handshake closes (1006) before any open */
const closed = (ws: WsWebSocket): Promise<{ code: number, reason: string }> =>
  new Promise((resolve) => { ws.once('close', (code, reason) => resolve({ code, reason: reason.toString() })) })

t.test('webSocket(): the token travels as a subprotocol after the app\'s, refreshed first when due', async (t) => {
  await env.addUser('erin')
  const offered: Array<{ url: string, protocols: string[] }> = []
  // a spy around the real `ws` client (Node 20 has no WebSocket global): it records what
  // the SDK asks for and connects for real
  class SpyWebSocket extends WsWebSocket {
    constructor (url: string, protocols?: string | string[]) {
      super(url, protocols)
      offered.push({ url, protocols: [protocols ?? []].flat() })
    }
  }
  const { rec, clock, tab } = openBrowser(t, { WebSocket: SpyWebSocket })
  const { c } = tab()
  await c.login('erin', 'pw-erin')
  clock.advanceSec(DUE_SEC + 1)
  const ws = await c.webSocket<WsWebSocket>('/ws/room?x=1', ['chat.v1'])
  t.teardown(() => { ws.terminate() })
  t.equal(rec.count('/auth/refresh'), 1, 'refreshed before opening')
  t.equal(offered.length, 1)
  t.equal(offered[0]?.url, `ws://127.0.0.1:${env.gw.port}/ws/room?x=1`, 'http → ws, relative to the gateway')
  t.same(offered[0]?.protocols, ['chat.v1', 'portcullis', `portcullis.bearer.${await c.accessToken()}`], 'the fresh token, last')
  t.notOk(offered[0]?.url.includes(await c.accessToken()), 'never in the URL')
  t.ok(await opened(ws), 'the gateway accepted it')
  t.equal(ws.protocol, 'chat.v1', 'the upstream\'s choice comes back')

  const reserved = await rejection(c.webSocket('/ws/room', ['portcullis.bearer.x']))
  t.ok(reserved instanceof TypeError, 'the reserved protocol names are refused')
  const foreign = await rejection(c.webSocket('ws://127.0.0.1:1/ws'))
  t.ok(foreign instanceof PortcullisError && foreign.code === 'foreign_origin', 'another origin never gets the token')
  t.equal(offered.length, 1, 'neither was opened')
})

t.test('through the gateway: the upstream gets the identity, never the bearer subprotocol', async (t) => {
  const id = await env.addUser('gina')
  const { tab } = openBrowser(t, { WebSocket: WsWebSocket })
  const { c } = tab()
  await c.login('gina', 'pw-gina')
  const ws = await c.webSocket<WsWebSocket>('/ws/room')
  t.teardown(() => { ws.terminate() })
  t.ok(await opened(ws), 'the upgrade was accepted')
  t.equal(ws.protocol, 'portcullis', 'no app protocol: the gateway answered with portcullis')
  const req = wsUpstream.upgrades[wsUpstream.upgrades.length - 1]
  t.equal(req?.headers['x-user-id'], id, 'the upstream sees the user')
  t.equal(req?.headers['sec-websocket-protocol'], undefined, 'neither the marker nor the token went upstream')
  const echo = new Promise<string>((resolve) => ws.once('message', (data) => resolve(String(data))))
  ws.send('hi')
  t.equal(await echo, 'echo:hi')
})

t.test('the gateway closes with 1008 when the token expires; the reconnect refreshes first', async (t) => {
  await env.addUser('hugo')
  const offered: string[][] = []
  class Recorded extends WsWebSocket {
    constructor (url: string, protocols?: string | string[]) {
      super(url, protocols)
      offered.push([protocols ?? []].flat())
    }
  }
  const { rec, tab } = openBrowser(t, { WebSocket: Recorded })
  const { c } = tab()
  await c.login('hugo', 'pw-hugo')
  // the gateway's clock to 200 ms before the token's end (its exp + clock skew): the SDK
  // still thinks it fresh, the gateway accepts it and arms its expiry close
  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC - 0.2)
  const first = await c.webSocket<WsWebSocket>('/ws/room')
  const firstClosed = closed(first)
  t.ok(await opened(first))
  t.match(await firstClosed, { code: 1008, reason: /expired/ }, 'closed by the gateway when the token expired')
  t.equal(rec.count('/auth/refresh'), 0)

  const second = await c.webSocket<WsWebSocket>('/ws/room')
  t.teardown(() => { second.terminate() })
  t.equal(rec.count('/auth/refresh'), 1, 'the reconnect refreshed first')
  t.not(offered[1]?.at(-1), offered[0]?.at(-1), 'with a new token')
  t.ok(await opened(second), 'and the new socket is accepted')
})

t.test('the gateway closes with 1008 on revocation; once the session is over the reconnect rejects instead of looping', async (t) => {
  await env.addUser('iris')
  let sockets = 0
  class Counted extends WsWebSocket {
    constructor (url: string, protocols?: string | string[]) {
      super(url, protocols)
      sockets++
    }
  }
  const { rec, tab } = openBrowser(t, { WebSocket: Counted })
  const { c, ended } = tab()
  await c.login('iris', 'pw-iris')

  // one token revoked, the session alive: the reconnect refreshes and gets in
  const first = await c.webSocket<WsWebSocket>('/ws/room')
  const firstClosed = closed(first)
  t.ok(await opened(first))
  const { jti, exp } = c.claims() as { jti: string, exp: number }
  t.equal((await env.admin('/admin/revocations/jti', { jti, exp })).status, 204)
  t.match(await firstClosed, { code: 1008, reason: /revoked/ }, 'closed by the gateway on revocation')
  const second = await c.webSocket<WsWebSocket>('/ws/room')
  const secondClosed = closed(second)
  t.equal(rec.count('/auth/refresh'), 1, 'the reconnect refreshed first')
  t.ok(await opened(second), 'and got in')

  // the user revoked: the reconnect learns the session is over
  t.equal((await env.admin('/admin/users/iris/revoke')).status, 200)
  t.equal((await secondClosed).code, 1008)
  const err = await rejection(c.webSocket('/ws/room'))
  t.ok(err instanceof SessionEndedError, 'SessionEndedError, not a third socket')
  t.same(ended, [{ reason: 'invalid_grant', fromOtherTab: false }])
  t.equal(sockets, 2)
})
