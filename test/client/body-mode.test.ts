/**
 * The client SDK in body mode (Node services, CLIs, mobile) against the REAL gateway on
 * real sockets: login, fetch with the token, proactive and reactive refresh, single flight
 * within a client and across clients, the end of a session, logout, network failures.
 *
 * Time: the gateway's clock and the SDK's are separate injected clocks, decades apart
 * (2030 vs ~1970), which is itself the check that the SDK never compares them. Expiry is
 * driven by moving one of them: the SDK's (proactive refresh) or the gateway's (a real
 * token_expired 401). Nothing sleeps.
 */
import t from 'tap'
import {
  createClient, InsufficientScopeError, InvalidCredentialsError, LocalLocks, memoryRefreshTokenStore, NetworkError,
  PortcullisError, SessionEndedError, TooManyAttemptsError,
} from '../../src/client/index.js'
import type { ClientOptions, FetchLike, LockManagerLike, PortcullisClient, SessionEndedEvent, TokenChangedEvent } from '../../src/client/index.js'
import {
  ACCESS_TTL_SEC, CLOCK_SKEW_SEC, REUSE_GRACE_SEC, makeClock, manualTimers, recorder, rejection, startEnv, waitFor,
  type Recorder, type TestClock,
} from './helpers.js'

const env = await startEnv(t, { transport: 'body' })
/** the default margin (60 s) is under a quarter of 300 s: the SDK refreshes 240 s after login */
const DUE_SEC = ACCESS_TTL_SEC - 60

interface Made {
  c: PortcullisClient
  rec: Recorder
  clock: TestClock
  ended: SessionEndedEvent[]
  changed: TokenChangedEvent[]
}

function make (t: Tap, options: Partial<ClientOptions> & { rec?: Recorder, clock?: TestClock } = {}): Made {
  const { rec = recorder(), clock = makeClock(1_000_000), ...rest } = options
  const c = createClient({ baseUrl: env.gw.url, transport: 'body', fetch: rec.fetch, now: clock, ...rest })
  t.teardown(() => { c.close() })
  const ended: SessionEndedEvent[] = []
  const changed: TokenChangedEvent[] = []
  c.on('sessionEnded', (e) => { ended.push(e) })
  c.on('tokenChanged', (e) => { changed.push(e) })
  return { c, rec, clock, ended, changed }
}
type Tap = { teardown: (fn: () => unknown) => void }

const claimsOf = (jwt: string): Record<string, any> => JSON.parse(Buffer.from(jwt.split('.')[1]!, 'base64url').toString('utf8'))
const lastUpstream = () => env.upstream.requests[env.upstream.requests.length - 1]

t.test('login, then fetch sends the access token: the upstream sees x-user-id', async (t) => {
  const id = await env.addUser('alice')
  const { c, rec, changed } = make(t)
  t.equal(c.status, 'unknown')
  await c.login('alice', 'pw-alice')
  t.equal(c.status, 'active')
  t.same(changed.map((e) => e.source), ['login'])
  t.equal(c.claims()?.preferred_username, 'alice', 'claims() decodes the token for display')

  const res = await c.fetch('/api/orders?page=2')
  t.equal(res.status, 200)
  t.same(await res.json(), { ok: true, url: '/api/orders?page=2' })
  t.equal(lastUpstream()?.headers['x-user-id'], id, 'the upstream sees the user id')
  t.equal(lastUpstream()?.headers['x-user-name'], 'alice')
  t.same(rec.calls.map((x) => `${x.method} ${x.path}`), ['POST /auth/login', 'GET /api/orders'], 'no refresh was needed')

  t.same(await c.json('/api/orders'), { ok: true, url: '/api/orders' }, 'json() parses')
  const err = await rejection(c.fetch('http://127.0.0.1:1/api/orders'))
  t.ok(err instanceof PortcullisError)
  t.equal(err.code, 'foreign_origin', 'another origin never gets the token')
  t.equal(rec.calls.length, 3, 'nothing was sent there')
})

t.test('failed logins are typed errors', async (t) => {
  await env.addUser('mallet')
  const { c } = make(t)
  const wrong = await rejection(c.login('mallet', 'nope'))
  t.ok(wrong instanceof InvalidCredentialsError)
  t.match(wrong, { code: 'invalid_credentials', status: 401 })
  t.equal(c.status, 'unknown', 'a failed login changes nothing')
  for (let i = 0; i < 4; i++) await rejection(c.login('mallet', `guess-${i}`))
  const locked = await rejection(c.login('mallet', 'pw-mallet'))
  t.ok(locked instanceof TooManyAttemptsError, 'throttled, even with the right password')
  t.match(locked, { code: 'too_many_attempts', status: 429 })
  t.ok(typeof locked.retryAfterSec === 'number' && locked.retryAfterSec > 0, `retryAfterSec ${String(locked.retryAfterSec)}`)
})

t.test('a missing scope is InsufficientScopeError from json()', async (t) => {
  await env.addUser('erin', ['orders:read'])
  const { c } = make(t)
  await c.login('erin', 'pw-erin')
  const err = await rejection(c.json('/reports/q1'))
  t.ok(err instanceof InsufficientScopeError)
  t.match(err, { code: 'insufficient_scope', status: 403, scope: 'reports:read' })
  const res = await c.fetch('/reports/q1')
  t.equal(res.status, 403, 'fetch() itself resolves with the answer, like fetch')
})

t.test('proactive refresh: once the margin is reached, exactly one POST /auth/refresh before the call', async (t) => {
  await env.addUser('frank')
  const { c, rec, clock, changed } = make(t)
  await c.login('frank', 'pw-frank')
  const first = await c.accessToken()

  clock.advanceSec(DUE_SEC - 1)
  t.equal((await c.fetch('/api/a')).status, 200)
  t.equal(rec.count('/auth/refresh'), 0, 'one second before the margin: no refresh')

  clock.advanceSec(2)
  t.equal((await c.fetch('/api/b')).status, 200)
  t.equal(rec.count('/auth/refresh'), 1, 'inside the margin: one refresh')
  t.same(rec.calls.slice(-2).map((x) => x.path), ['/auth/refresh', '/api/b'], 'the refresh came before the call')
  t.not(await c.accessToken(), first, 'a new token is in use')
  t.same(changed.map((e) => e.source), ['login', 'refresh'])
  t.equal(rec.count('/auth/refresh'), 1, 'the new token is fresh: no second refresh')
  t.equal(claimsOf(await c.accessToken()).sid, claimsOf(first).sid, 'same session')
})

t.test('reactive refresh: a real token_expired 401, one refresh, one retry with the same body', async (t) => {
  await env.addUser('grace')
  const { c, rec } = make(t)
  await c.login('grace', 'pw-grace')
  const token = await c.accessToken()
  // the gateway's clock runs ahead of the SDK's estimate: the SDK believes the token fresh
  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
  t.match(await env.probe(token), { status: 401, code: 'token_expired' }, 'the gateway says expired')

  const before = env.upstream.requests.length
  const res = await c.fetch('/api/items', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"n":1}' })
  t.equal(res.status, 200, 'the retry succeeded')
  t.same(rec.calls.slice(1).map((x) => `${x.method} ${x.path}`), ['POST /api/items', 'POST /auth/refresh', 'POST /api/items'])
  t.equal(env.upstream.requests.length, before + 1, 'the upstream got the request once (the first try was refused at the gateway)')
  t.equal(lastUpstream()?.body.toString(), '{"n":1}', 'with its body')
})

t.test('reactive refresh: a ReadableStream body is not retried (it was consumed)', async (t) => {
  await env.addUser('heidi')
  const { c, rec } = make(t)
  await c.login('heidi', 'pw-heidi')
  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
  const before = env.upstream.requests.length
  const body = new ReadableStream<Uint8Array>({ start (ctl) { ctl.enqueue(new TextEncoder().encode('streamed')); ctl.close() } })
  const res = await c.fetch('/api/upload', { method: 'POST', body, duplex: 'half' } as RequestInit)
  t.equal(res.status, 401, 'the 401 is returned')
  t.equal(((await res.json()) as { code: string }).code, 'token_expired', 'its body is intact')
  t.equal(rec.count('/api/upload'), 1, 'not retried')
  t.equal(rec.count('/auth/refresh'), 1, 'but the token was refreshed')
  t.equal(env.upstream.requests.length, before, 'nothing reached the upstream')
  t.equal((await c.fetch('/api/after')).status, 200, 'the next call works')
  t.equal(rec.count('/auth/refresh'), 1, 'without another refresh')
})

t.test('single flight: 10 concurrent calls that need a refresh share one', async (t) => {
  const id = await env.addUser('ivan')
  // the lock alone would also yield one refresh (the second holder finds a fresh token):
  // counting lock requests shows that the calls shared one refresh before reaching it
  const inner = new LocalLocks()
  let lockRequests = 0
  const locks: LockManagerLike = { request: async (name, options, callback) => { lockRequests++; return await inner.request(name, options, callback) } }
  const { c, rec, clock } = make(t, { crossTab: { locks, channel: null } })
  await c.login('ivan', 'pw-ivan')
  lockRequests = 0

  clock.advanceSec(DUE_SEC + 1)
  const before = env.upstream.requests.length
  const proactive = await Promise.all(Array.from({ length: 10 }, (_, i) => c.fetch(`/api/p${i}`)))
  t.same(proactive.map((r) => r.status), Array(10).fill(200))
  t.equal(rec.count('/auth/refresh'), 1, 'proactive: one refresh for 10 calls')
  t.equal(lockRequests, 1, 'one refresh in flight, shared by the 10 calls')
  t.equal(env.upstream.requests.length, before + 10)
  t.ok(env.upstream.requests.slice(before).every((r) => r.headers['x-user-id'] === id))

  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
  const reactive = await Promise.all(Array.from({ length: 10 }, (_, i) => c.fetch(`/api/r${i}`)))
  t.same(reactive.map((r) => r.status), Array(10).fill(200))
  t.equal(rec.count('/auth/refresh'), 2, 'reactive: ten 401s, one more refresh')
  t.equal(lockRequests, 2, 'the 401s joined the refresh in flight or found its result')
  for (let i = 0; i < 10; i++) t.equal(rec.count(`/api/r${i}`), 2, `call ${i}: sent, refused, retried once`)
})

t.test('no retry on token_revoked; the session is asked once whether it lives', async (t) => {
  await env.addUser('judy')
  const { c, rec, ended } = make(t)
  await c.login('judy', 'pw-judy')
  const token = await c.accessToken()
  const { jti, exp } = claimsOf(token)
  t.equal((await env.admin('/admin/revocations/jti', { jti, exp })).status, 204, 'an operator revokes this one token')
  t.ok(await waitFor(async () => (await env.probe(token)).code === 'token_revoked'), 'the revocation reached the gateway')

  const before = env.upstream.requests.length
  const res = await c.fetch('/api/x')
  t.equal(res.status, 401)
  t.equal(((await res.json()) as { code: string }).code, 'token_revoked')
  t.equal(rec.count('/api/x'), 1, 'not retried')
  t.equal(env.upstream.requests.length, before, 'nothing reached the upstream')
  t.equal(rec.count('/auth/refresh'), 1, 'one refresh probed the session: it lives (only the token was revoked)')
  t.equal(c.status, 'active')
  t.same(ended, [])
  t.equal((await c.fetch('/api/y')).status, 200, 'the next call uses the new token')
  t.equal(rec.count('/auth/refresh'), 1)
})

t.test('an operator revokes the user: sessionEnded fires and fetch rejects, without looping', async (t) => {
  await env.addUser('karl')
  const store = memoryRefreshTokenStore()
  const { c, rec, ended } = make(t, { refreshTokenStore: store })
  await c.login('karl', 'pw-karl')
  const token = await c.accessToken()
  t.equal((await env.admin('/admin/users/karl/revoke')).status, 200)
  t.ok(await waitFor(async () => (await env.probe(token)).code === 'token_revoked'))

  const before = env.upstream.requests.length
  const err = await rejection(c.fetch('/api/x'))
  t.ok(err instanceof SessionEndedError, 'SessionEndedError')
  t.match(err, { code: 'session_ended', reason: 'invalid_grant', status: 400 })
  t.same(ended, [{ reason: 'invalid_grant', fromOtherTab: false }], 'sessionEnded fired once')
  t.equal(c.status, 'ended')
  t.equal(await store.get(), undefined, 'the dead refresh token is gone from the store')
  t.equal(env.upstream.requests.length, before)
  t.same(rec.calls.slice(1).map((x) => x.path), ['/api/x', '/auth/refresh'], 'one call, one probe, no retry')

  const calls = rec.calls.length
  t.ok(await rejection(c.fetch('/api/again')) instanceof SessionEndedError, 'later calls fail at once')
  t.equal(rec.calls.length, calls, 'without touching the network')
  t.equal(ended.length, 1, 'and without a second event')
})

t.test('logout-all: this client ends at once, another device at its next refresh', async (t) => {
  await env.addUser('laura')
  const one = make(t)
  const two = make(t)
  await one.c.login('laura', 'pw-laura')
  await two.c.login('laura', 'pw-laura')
  const oldToken = await one.c.accessToken()
  await one.c.logoutAll()
  t.same(one.ended, [{ reason: 'logout_all', fromOtherTab: false }])
  t.equal(one.c.status, 'ended')
  t.ok(await waitFor(async () => (await env.probe(oldToken)).code === 'token_revoked'), 'its access token is revoked')

  two.clock.advanceSec(DUE_SEC + 1)
  const err = await rejection(two.c.fetch('/api/x'))
  t.ok(err instanceof SessionEndedError)
  t.same(two.ended, [{ reason: 'invalid_grant', fromOtherTab: false }], 'the other device learns at its refresh')
})

t.test('logout clears the state here and at the gateway', async (t) => {
  await env.addUser('mona')
  const store = memoryRefreshTokenStore()
  const { c, rec, ended } = make(t, { refreshTokenStore: store })
  await c.login('mona', 'pw-mona')
  const token = await c.accessToken()
  const refreshToken = await store.get()
  t.type(refreshToken, 'string', 'body mode keeps the refresh token in the store')

  await c.logout()
  const call = rec.calls[rec.calls.length - 1]!
  t.equal(call.path, '/auth/logout')
  t.same(JSON.parse(call.body ?? '{}'), { refresh_token: refreshToken }, 'the refresh token was presented')
  t.same(ended, [{ reason: 'logout', fromOtherTab: false }])
  t.equal(c.status, 'ended')
  t.equal(c.claims(), undefined, 'no token in memory')
  t.equal(await store.get(), undefined, 'none in the store')
  const calls = rec.calls.length
  t.ok(await rejection(c.fetch('/api/x')) instanceof SessionEndedError)
  t.equal(rec.calls.length, calls, 'no request after logout')

  const refresh = await fetch(`${env.gw.url}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: refreshToken }) })
  t.equal(refresh.status, 400, 'the gateway refuses the old refresh token')
  t.ok(await waitFor(async () => (await env.probe(token)).code === 'token_revoked'), 'and the access token was sent along: denylisted')

  await c.login('mona', 'pw-mona')
  t.equal(c.status, 'active', 'a new login works')
  t.equal((await c.fetch('/api/x')).status, 200)
})

/**
 * Network faults: the machine's network cannot be cut for one request, so a fetch wrapper
 * throws what fetch throws (TypeError) — before the request leaves, or after the gateway
 * answered (a lost answer). Everything else is the real gateway.
 */
t.test('network failure mid-refresh: the refresh rejects, the session is not ended, the next call retries', async (t) => {
  await env.addUser('nina')
  let fail: 'before' | 'after' | undefined
  const faulty: FetchLike = async (input, init) => {
    const path = new URL(String(input)).pathname
    const mode = path === '/auth/refresh' ? fail : undefined
    fail = path === '/auth/refresh' ? undefined : fail
    if (mode === 'before') throw new TypeError('fetch failed')
    const res = await fetch(input, init)
    if (mode === 'after') { await res.arrayBuffer(); throw new TypeError('fetch failed') }
    return res
  }
  const store = memoryRefreshTokenStore()
  const { c, rec, clock, ended } = make(t, { rec: recorder(faulty), refreshTokenStore: store })
  await c.login('nina', 'pw-nina')
  const first = await c.accessToken()

  t.test('inside the margin, before expiry: the current token is still sent', async (t) => {
    clock.advanceSec(DUE_SEC + 1)
    fail = 'before'
    const res = await c.fetch('/api/a')
    t.equal(res.status, 200, 'the call succeeded with the old token')
    t.equal(rec.count('/auth/refresh'), 1, 'after one failed refresh')
    t.equal(c.status, 'active')
    t.same(ended, [], 'no sessionEnded')
    t.not(await c.accessToken(), first, 'the next use of the token retried the refresh')
    t.equal(rec.count('/auth/refresh'), 2, 'and it succeeded')
  })

  t.test('past expiry: the call rejects with NetworkError; the session lives on', async (t) => {
    clock.advanceSec(ACCESS_TTL_SEC + 1)
    fail = 'before'
    const err = await rejection(c.fetch('/api/b'))
    t.ok(err instanceof NetworkError, 'NetworkError')
    t.match(err, { code: 'network_error', status: 0 })
    t.equal(c.status, 'active', 'not ended')
    t.same(ended, [], 'no sessionEnded')
    t.type(await store.get(), 'string', 'the refresh token is kept')
    t.equal((await c.fetch('/api/b')).status, 200, 'the next call refreshes and succeeds')
  })

  t.test('the answer is lost after the gateway rotated: a retry within the grace window gets the same successor', async (t) => {
    clock.advanceSec(ACCESS_TTL_SEC + 1)
    fail = 'after'
    const spent = await store.get()
    t.ok(await rejection(c.fetch('/api/c')) instanceof NetworkError)
    t.equal(await store.get(), spent, 'the store still holds the token the gateway has spent')
    t.equal((await c.fetch('/api/c')).status, 200, 'within reuseGrace the gateway hands out the successor again')
    t.same(ended, [])
  })

  t.test('…and after the grace window the gateway cannot tell it from theft: the session ends', async (t) => {
    clock.advanceSec(ACCESS_TTL_SEC + 1)
    fail = 'after'
    t.ok(await rejection(c.fetch('/api/d')) instanceof NetworkError)
    env.gatewayClock.advanceSec(REUSE_GRACE_SEC + 1)
    const err = await rejection(c.fetch('/api/d'))
    t.ok(err instanceof SessionEndedError, 'invalid_grant: reuse detected')
    t.same(ended, [{ reason: 'invalid_grant', fromOtherTab: false }])
  })
})

t.test('two clients sharing one store, lock and channel: one refresh between them, logout reaches both', async (t) => {
  await env.addUser('olga')
  const rec = recorder()
  const clock = makeClock(5_000_000)
  const crossTab = { key: `olga-${process.pid}`, locks: new LocalLocks() } // channel: Node 20's global BroadcastChannel
  const refreshTokenStore = memoryRefreshTokenStore()
  const a = make(t, { rec, clock, refreshTokenStore, crossTab })
  const b = make(t, { rec, clock, refreshTokenStore, crossTab })

  await a.c.login('olga', 'pw-olga')
  t.ok(await waitFor(() => b.c.status === 'active'), 'b adopted the login broadcast by a')
  t.same(b.changed.map((e) => e.source), ['other_tab'])
  t.equal(await b.c.accessToken(), await a.c.accessToken(), 'the same access token')

  clock.advanceSec(DUE_SEC + 1)
  const all = await Promise.all([...Array.from({ length: 5 }, () => a.c.fetch('/api/a')), ...Array.from({ length: 5 }, () => b.c.fetch('/api/b'))])
  t.same(all.map((r) => r.status), Array(10).fill(200))
  t.equal(rec.count('/auth/refresh'), 1, 'exactly one refresh for both clients')
  t.equal(await b.c.accessToken(), await a.c.accessToken(), 'both use the new token')

  await a.c.logout()
  t.ok(await waitFor(() => b.ended.length === 1), 'b heard of the logout')
  t.same(b.ended, [{ reason: 'logout', fromOtherTab: true }])
  const calls = rec.calls.length
  t.ok(await rejection(b.c.fetch('/api/b')) instanceof SessionEndedError)
  t.equal(rec.calls.length, calls, 'b sends nothing after the other tab logged out')
})

t.test('autoRefresh: a timer refreshes at the margin; a failed attempt is retried later', async (t) => {
  await env.addUser('piotr')
  let failRefresh = false
  const timers = manualTimers()
  const { c, rec, clock } = make(t, {
    autoRefresh: true,
    timers,
    // a network fault injected by the wrapper, as above
    rec: recorder(async (input, init) => {
      if (failRefresh && new URL(String(input)).pathname === '/auth/refresh') throw new TypeError('fetch failed')
      return await fetch(input, init)
    }),
  })
  await c.login('piotr', 'pw-piotr')
  t.same(timers.pending(), [{ delayMs: DUE_SEC * 1000 }], 'armed for the margin')

  clock.advanceSec(DUE_SEC)
  timers.fire()
  t.ok(await waitFor(() => rec.count('/auth/refresh') === 1), 'the timer refreshed')
  t.ok(await waitFor(() => timers.pending().length === 1 && timers.pending()[0]!.delayMs === DUE_SEC * 1000), 're-armed for the new token')

  clock.advanceSec(DUE_SEC)
  failRefresh = true
  timers.fire()
  t.ok(await waitFor(() => timers.pending().some((x) => x.delayMs === 15_000)), 'a failed background refresh is retried in 15 s')
  t.equal(c.status, 'active')
  failRefresh = false
  clock.advanceSec(15)
  timers.fire()
  t.ok(await waitFor(() => rec.count('/auth/refresh') === 3), 'and the retry refreshed')
})

t.test('a Request object: its headers are kept and the token added; with a body it is sent once', async (t) => {
  await env.addUser('quinn')
  const { c, rec } = make(t)
  await c.login('quinn', 'pw-quinn')
  const before = env.upstream.requests.length
  t.equal((await c.fetch(new Request(`${env.gw.url}/api/req`, { headers: { 'x-trace': 'abc' } }))).status, 200)
  t.equal(env.upstream.requests[before]?.headers['x-trace'], 'abc', 'the Request\'s own headers went along')

  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
  const withBody = await c.fetch(new Request(`${env.gw.url}/api/req`, { method: 'POST', body: 'x' }))
  t.equal(withBody.status, 401, 'a Request carrying a body is not retried (its body is a stream)')
  t.equal(rec.count('/auth/refresh'), 1, 'the token was refreshed all the same')

  env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
  t.equal((await c.fetch(new Request(`${env.gw.url}/api/req`))).status, 200, 'a Request without a body is retried')
  t.equal(rec.count('/auth/refresh'), 2)
})

t.test('the caller\'s abort while a refresh is in flight: AbortError for the caller, the refresh completes for everyone', async (t) => {
  await env.addUser('rita')
  const { c, rec, clock } = make(t)
  await c.login('rita', 'pw-rita')
  clock.advanceSec(DUE_SEC + 1)
  const ctl = new AbortController()
  const aborted = c.fetch('/api/x', { signal: ctl.signal })
  ctl.abort()
  const err = await rejection(aborted)
  t.equal(err.name, 'AbortError')
  t.notOk(err instanceof NetworkError, 'not dressed up as a network error')
  t.ok(await waitFor(() => rec.count('/auth/refresh') === 1))
  t.equal((await c.fetch('/api/x')).status, 200)
  t.equal(rec.count('/auth/refresh'), 1, 'the shared refresh was not abandoned')
  t.equal(rec.count('/api/x'), 1, 'the aborted call was never sent')
})
