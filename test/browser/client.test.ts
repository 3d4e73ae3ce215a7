/**
 * The client SDK in real Chromium, the app and the gateway on different origins (two ports
 * of 127.0.0.1, helpers.ts): login, proactive and reactive refresh, two tabs sharing one
 * refresh (and the control experiment without the cross-tab lock), the refresh token out of
 * script's reach, a revoked session, WebSockets. Refreshes are counted at the gateway, from
 * its decision lines; time moves on the SDK's clock or the gateway's, never by sleeping.
 */
import t, { type Test } from 'tap'
import { requireBrowser } from '../fixtures/browser.js'
import {
  ACCESS_TTL_SEC, CLOCK_SKEW_SEC, REFRESH_COOKIE, REFRESH_MARGIN_SEC, call, eventually, ok, startBrowserEnv,
  type Described, type Settled,
} from './helpers.js'
import type { OpenedPage } from '../fixtures/browser.js'

interface TokenId { jti: string, sid: string }
interface ClientEvent { type: string, source?: string, reason?: string, fromOtherTab?: boolean }

if (requireBrowser(t)) {
  const env = await startBrowserEnv(t)
  /** the SDK's clock, moved into the refresh margin of a token it just received */
  const INTO_MARGIN_MS = (ACCESS_TTL_SEC - REFRESH_MARGIN_SEC + 1) * 1000

  const login = async (t: Test, tab: OpenedPage, name: string): Promise<{ id: string, password: string }> => {
    const user = await env.addUser(name)
    ok(t, await call<Settled<void>>(tab, 'login', name, user.password), 'login')
    return user
  }
  const apiCalls = (): typeof env.decisions => env.decisions.filter((d) => d.route === 'api' && d.method !== 'OPTIONS')

  t.test('login through the SDK; the refresh token lives in an HttpOnly cookie that script never sees', async (t) => {
    const tab = await env.openTab()
    const bodies: Array<Promise<string>> = []
    tab.page.on('response', (res) => { if (new URL(res.url()).pathname.startsWith('/auth/')) bodies.push(res.text().catch(() => '')) })
    const user = await login(t, tab, 'alice')
    t.equal(await call(tab, 'status'), 'active')

    const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/orders/1'), 'fetch')
    t.equal(res.status, 200)
    const seen = env.upstream.requests.at(-1)
    t.equal(seen?.url, '/api/orders/1')
    t.equal(seen?.headers['x-user-id'], user.id, 'the upstream gets the identity')
    t.equal(seen?.headers.authorization, undefined, 'and not the token')

    const cookie = (await tab.page.context().cookies(env.gw.url)).find((c) => c.name === REFRESH_COOKIE)
    t.ok(cookie, 'the browser holds the refresh cookie for the gateway')
    t.match(cookie, { httpOnly: true, secure: true, sameSite: 'Strict', path: '/' })
    const refreshToken = cookie?.value ?? 'absent'
    t.ok(refreshToken.length >= 40)

    const visible = await call<Record<string, string | string[]>>(tab, 'visibleState')
    t.notOk(String(visible.cookie).includes(REFRESH_COOKIE), 'document.cookie does not list it')
    for (const [where, text] of Object.entries(visible)) {
      t.notOk(String(text).includes(refreshToken), `the refresh token is not in ${where}`)
      t.notOk(/eyJ[\w-]+\.eyJ/.test(String(text)), `no access token in ${where} either (memory only)`)
    }
    t.notOk((visible.clientKeys as string[]).some((k) => /refresh.?token/i.test(k)), 'the client has no refresh-token property')
    for (const body of await Promise.all(bodies)) {
      t.notOk(body.includes('refresh_token') || body.includes(refreshToken), 'no auth answer carries it in its body')
    }
    t.ok(bodies.length >= 1, 'the login answer was seen')
    await tab.page.close()
  })

  t.test('proactive refresh: a token within the margin of its expiry is replaced before the call', async (t) => {
    const tab = await env.openTab()
    await login(t, tab, 'bob')
    const before = await call<TokenId>(tab, 'tokenId')
    const refreshes = await env.refreshes()
    const rejected = apiCalls().filter((d) => d.status === 401).length

    // only the SDK's view of time moves: the gateway would still accept the old token
    await call(tab, 'advanceClock', INTO_MARGIN_MS)
    const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/proactive'), 'fetch')
    t.equal(res.status, 200)
    t.equal(await env.refreshes(), refreshes + 1, 'one refresh')
    t.equal(apiCalls().filter((d) => d.status === 401).length, rejected, 'the gateway never had to refuse a token')
    const after = await call<TokenId>(tab, 'tokenId')
    t.not(after.jti, before.jti, 'a new access token')
    t.equal(after.sid, before.sid, 'in the same session')
    t.match((await call<ClientEvent[]>(tab, 'events')).at(-1), { type: 'tokenChanged', source: 'refresh' })

    ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/proactive'), 'fetch again')
    t.equal(await env.refreshes(), refreshes + 1, 'the fresh token is used as is')
    await tab.page.close()
  })

  t.test('reactive refresh: a 401 token_expired is refreshed once and the request sent again', async (t) => {
    const tab = await env.openTab()
    await login(t, tab, 'carol')
    const before = await call<TokenId>(tab, 'tokenId')
    const refreshes = await env.refreshes()
    const seen = env.upstream.requests.length

    // the gateway's clock passes the token's expiry (and the skew); the SDK's does not move,
    // so it sends the old token: the gateway's verdict must beat the SDK's estimate
    env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
    const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/reactive', { method: 'POST', body: '{"n":1}', headers: { 'content-type': 'application/json' } }), 'fetch')
    t.equal(res.status, 200)
    const lines = (await env.settledDecisions()).filter((d) => d.path === '/api/reactive' && d.method === 'POST')
    t.match(lines.map((d) => [d.status, d.reason]), [[401, 'token_expired'], [200, 'granted']], 'refused once, then granted')
    t.equal(await env.refreshes(), refreshes + 1, 'one refresh')
    const forwarded = env.upstream.requests.slice(seen)
    t.equal(forwarded.length, 1, 'the upstream saw only the granted request')
    t.equal(forwarded[0]?.body.toString(), '{"n":1}', 'with its body, sent again')
    t.not((await call<TokenId>(tab, 'tokenId')).jti, before.jti)
    await tab.page.close()
  })

  /** two tabs of one browser on one session, tokens shared, both clocks moved into the refresh margin */
  const twoTabs = async (t: Test, name: string, query = ''): Promise<{ a: OpenedPage, b: OpenedPage, shared: TokenId | undefined, id: string, close: () => Promise<void> }> => {
    const context = await env.newContext()
    const a = await env.openTab(env.app, context, query)
    const user = await login(t, a, name)
    const b = await env.openTab(env.app, context, query)
    t.equal(ok(t, await call<Settled<boolean>>(b, 'restore'), 'restore'), true, 'the second tab resumes the session from the cookie')
    const [ta, tb] = await Promise.all([call<TokenId>(a, 'tokenId'), call<TokenId>(b, 'tokenId')])
    t.equal(ta.sid, tb.sid, 'one session')
    await Promise.all([call(a, 'advanceClock', INTO_MARGIN_MS), call(b, 'advanceClock', INTO_MARGIN_MS)])
    return { a, b, shared: tb, id: user.id, close: () => context.close() }
  }
  /** both tabs call at the same wall-clock moment (not one after the other) */
  const together = async (a: OpenedPage, b: OpenedPage): Promise<[Settled<Described>, Settled<Described>]> => {
    const atMs = Date.now() + 300
    return await Promise.all([call<Settled<Described>>(a, 'fetchAt', atMs, '/api/tab-a'), call<Settled<Described>>(b, 'fetchAt', atMs, '/api/tab-b')])
  }

  t.test('two tabs refreshing at once send exactly one POST /auth/refresh, and both keep working', async (t) => {
    const { a, b, shared, id, close } = await twoTabs(t, 'dave')
    const same = async (): Promise<TokenId | undefined> => {
      const [ta, tb] = await Promise.all([call<TokenId>(a, 'tokenId'), call<TokenId>(b, 'tokenId')])
      return ta.jti === tb.jti ? ta : undefined
    }
    t.same(await eventually(same), shared, "the first tab adopted the second tab's token")

    const refreshes = await env.refreshes()
    const [ra, rb] = await together(a, b)
    t.equal(ok(t, ra, 'tab a').status, 200)
    t.equal(ok(t, rb, 'tab b').status, 200)
    t.equal(await env.refreshes(), refreshes + 1, 'exactly one refresh for both tabs')
    const now = await same()
    t.ok(now !== undefined && now.jti !== shared?.jti, 'both tabs hold the one new token')
    const sources = (await Promise.all([call<ClientEvent[]>(a, 'events'), call<ClientEvent[]>(b, 'events')])).map((events) => events.at(-1)?.source).sort()
    t.same(sources, ['other_tab', 'refresh'], 'one tab refreshed, the other adopted its news')

    for (const tab of [a, b, a, b]) t.equal(ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/after'), 'after').status, 200)
    t.equal(await env.refreshes(), refreshes + 1, 'and no refresh since')
    t.equal(env.upstream.requests.at(-1)?.headers['x-user-id'], id)
    t.same([...a.errors, ...b.errors], [], 'no page errors')
    await close()
  })

  t.test('the control: without the cross-tab lock and channel, the same two tabs send two refreshes', async (t) => {
    const { a, b, close } = await twoTabs(t, 'dora', '&crossTab=0')
    const refreshes = await env.refreshes()
    const [ra, rb] = await together(a, b)
    // the gateway's reuse grace forgives the second presentation of the cookie (it is within
    // 10 s); after it, the same race would revoke the session — what the lock prevents
    t.equal(ok(t, ra, 'tab a').status, 200)
    t.equal(ok(t, rb, 'tab b').status, 200)
    t.equal(await env.refreshes(), refreshes + 2, 'each tab refreshed')
    await close()
  })

  t.test('a session revoked by an operator ends in the sessionEnded event, in every tab', async (t) => {
    const context = await env.newContext()
    const a = await env.openTab(env.app, context)
    await login(t, a, 'erin')
    const b = await env.openTab(env.app, context)
    ok(t, await call<Settled<boolean>>(b, 'restore'), 'restore')

    const revoked = await env.admin('POST', '/admin/users/erin/revoke')
    t.equal(revoked.ok, true, 'the admin API revoked the user')
    const seen = env.upstream.requests.length
    const res = await call<Settled<Described>>(a, 'fetch', '/api/after-revoke')
    t.match(res, { ok: false, name: 'SessionEndedError', code: 'session_ended', reason: 'invalid_grant' }, 'the call rejects: log in again')
    t.equal(env.upstream.requests.length, seen, 'nothing reached the upstream')
    const lines = (await env.settledDecisions()).filter((d) => d.sub === null || d.route === 'auth.refresh').slice(-2)
    t.match(lines.map((d) => [d.route, d.status, d.reason]), [['api', 401, 'token_revoked'], ['auth.refresh', 400, 'invalid_grant']],
      'the gateway refused the token, the SDK asked once whether the session lives: it does not')
    t.match((await call<ClientEvent[]>(a, 'events')).at(-1), { type: 'sessionEnded', reason: 'invalid_grant', fromOtherTab: false })
    t.equal(await call(a, 'status'), 'ended')
    const other = await eventually(async () => (await call<ClientEvent[]>(b, 'events')).find((e) => e.type === 'sessionEnded'))
    t.match(other, { reason: 'invalid_grant', fromOtherTab: true }, 'the other tab hears of it')

    const next = await call<Settled<Described>>(a, 'fetch', '/api/after-end')
    t.match(next, { ok: false, name: 'SessionEndedError', code: 'session_ended' }, 'later calls reject until the user logs in again')
    await context.close()
  })

  t.test('a WebSocket through the SDK: identity upstream, no token anywhere, closed 1008 by the gateway on logout', async (t) => {
    const tab = await env.openTab()
    const user = await login(t, tab, 'frank')
    const first = env.ws.upgrades.length

    const chat = ok(t, await call<Settled<{ index: number, protocol: string, url: string }>>(tab, 'openSocket', '/ws/chat', ['chat.v1']), 'open chat.v1')
    t.equal(chat.protocol, 'chat.v1', "the upstream's protocol reaches the page")
    t.equal(new URL(chat.url).pathname, '/ws/chat', 'no token in the URL')
    t.equal(new URL(chat.url).search, '')
    const plain = ok(t, await call<Settled<{ index: number, protocol: string }>>(tab, 'openSocket', '/ws/plain', []), 'open without a protocol')
    t.equal(plain.protocol, 'portcullis', 'the gateway answers its marker when the app offered none')

    const upgrades = env.ws.upgrades.slice(first)
    t.equal(upgrades.length, 2)
    for (const req of upgrades) {
      t.equal(req.headers['x-user-id'], user.id, 'the upstream gets the identity')
      t.equal(req.headers.authorization, undefined)
      t.notOk(String(req.headers['sec-websocket-protocol'] ?? '').includes('portcullis'), 'and neither the bearer protocol nor the marker')
      t.notOk((req.url ?? '').includes('eyJ'), 'nor a token in the URL')
    }
    t.equal(upgrades[0]?.headers['sec-websocket-protocol'], 'chat.v1')
    t.equal(upgrades[1]?.headers['sec-websocket-protocol'], undefined)

    t.match(await call(tab, 'exchange', chat.index, 'hello'), { ok: true, value: 'echo:hello' })
    t.match(await call(tab, 'exchange', plain.index, 'again'), { ok: true, value: 'echo:again' })

    ok(t, await call<Settled<void>>(tab, 'logout'), 'logout')
    for (const s of [chat, plain]) {
      t.match(await call(tab, 'closed', s.index), { ok: true, value: { code: 1008, reason: 'the access token was revoked' } }, 'closed by the gateway')
    }
    t.match((await call<ClientEvent[]>(tab, 'events')).at(-1), { type: 'sessionEnded', reason: 'logout' })
    const cookie = (await tab.page.context().cookies(env.gw.url)).find((c) => c.name === REFRESH_COOKIE)
    t.equal(cookie, undefined, 'logout cleared the refresh cookie')
    t.same(tab.errors.filter((e) => !e.includes('WebSocket')), [], 'no page errors')
    await tab.page.close()
  })
}
