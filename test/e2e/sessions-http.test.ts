/**
 * The client's HTTP contract for sessions (DESIGN.md "The client's contract: HTTP" and
 * "The token lifecycle"), end to end through the real gateway on real sockets with a
 * recording upstream, against BOTH stores: a real PostgreSQL and embedded PGlite.
 * Time is injected (deps.clock) and moved, never slept; only revocations reaching the
 * in-memory denylist through the feed are polled, briefly.
 */
import t from 'tap'
import { performance } from 'node:perf_hooks'
import { usersAdd, usersSetScopes } from '../../src/sessions/admin-commands.js'
import type { Store } from '../../src/sessions/store.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { AUDIENCE, ISSUER, baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import type { RawResponse, StartedGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'

const key = makeKey('EdDSA')
const COOKIE = '__Host-portcullis-rt'
const ORIGIN = 'https://app.example.test'
const ADMIN_TOKEN = 'admin-token-for-the-sessions-http-suite'
const ACCESS_TTL_SEC = 300
const REFRESH_TTL_SEC = 2 * 3600
const SESSION_MAX_AGE_SEC = 3 * 3600
const REUSE_GRACE_SEC = 10
const UA = 'sessions-http-test/1.0'

const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

/** the gateway takes ownership of its store and closes it; several gateways share one here */
function borrowed (store: Store): Store {
  return new Proxy(store, {
    get (target, prop) {
      if (prop === 'close') return async () => {}
      const v: unknown = Reflect.get(target, prop, target)
      return typeof v === 'function' ? v.bind(target) : v
    },
  })
}

interface Cookie { name: string, value: string, attrs: Record<string, string | true> }

function parseSetCookie (header: string): Cookie {
  const [pair, ...rest] = header.split(';')
  const eq = pair!.indexOf('=')
  const attrs: Record<string, string | true> = {}
  for (const a of rest) {
    const i = a.indexOf('=')
    if (i === -1) attrs[a.trim().toLowerCase()] = true
    else attrs[a.slice(0, i).trim().toLowerCase()] = a.slice(i + 1).trim()
  }
  return { name: pair!.slice(0, eq).trim(), value: pair!.slice(eq + 1).trim(), attrs }
}

function setCookies (res: RawResponse): Cookie[] {
  const h = res.headers['set-cookie']
  return (h === undefined ? [] : h).map(parseSetCookie)
}

function payloadOf (jwt: string): Record<string, any> {
  const part = jwt.split('.')[1]
  return JSON.parse(Buffer.from(part!, 'base64url').toString('utf8'))
}

async function waitFor (fn: () => Promise<boolean>, timeoutMs = 1000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await fn()) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

for (const name of ['postgres', 'embedded'] as const) {
  t.test(name, { skip: b.names.includes(name) ? false : b.skipped }, async (t) => {
    const store = await b.open(name, t)
    const clock = makeClock()
    const upstream = await startUpstream()
    t.teardown(() => upstream.close())

    const config = (transport: 'cookie' | 'body' | 'both', adminToken: string): Record<string, any> => baseConfig(key, [
      { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    ], {
      admin: { token: adminToken },
      tokens: {
        accessTokenTtl: `${ACCESS_TTL_SEC}s`,
        refreshTokenTtl: `${REFRESH_TTL_SEC}s`,
        sessionMaxAge: `${SESSION_MAX_AGE_SEC}s`,
        refresh: { transport, reuseGrace: `${REUSE_GRACE_SEC}s` },
        allowedOrigins: [ORIGIN],
      },
      identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes', tenant: 'x-user-tenant' } },
    })
    const shared = borrowed(store)
    const cookieGw = await startGateway(t, config('cookie', ADMIN_TOKEN), { store: shared, clock })
    const bodyGw = await startGateway(t, config('body', ''), { store: shared, clock })
    const bothGw = await startGateway(t, config('both', ''), { store: shared, clock })

    const addUser = async (user: string, extra: { scopes?: string[], claims?: Record<string, unknown> } = {}): Promise<string> =>
      (await usersAdd(store, { name: user, password: `pw-${user}`, scopes: extra.scopes ?? ['orders:read'], claims: extra.claims ?? {} }, { clock })).id

    const json = (gw: StartedGateway, path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
      raw(gw.url, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
    const login = (gw: StartedGateway, user: string, password = `pw-${user}`, headers: Record<string, string> = {}): Promise<RawResponse> =>
      json(gw, '/auth/login', { username: user, password }, { 'user-agent': UA, ...headers })
    /** a browser's cookie-carried POST: JSON, allowed Origin, same-origin fetch metadata */
    const cookiePost = (gw: StartedGateway, path: string, rt: string, headers: Record<string, string> = {}): Promise<RawResponse> =>
      json(gw, path, {}, { cookie: `${COOKIE}=${rt}`, origin: ORIGIN, 'sec-fetch-site': 'same-site', ...headers })
    const api = (gw: StartedGateway, access: string): Promise<RawResponse> =>
      raw(gw.url, '/api/me', { headers: { authorization: `Bearer ${access}` } })
    const refreshCookieOf = (res: RawResponse): string => {
      const c = setCookies(res).find((x) => x.name === COOKIE)
      if (c === undefined) throw new Error(`no ${COOKIE} cookie in ${res.status} ${res.body}`)
      return c.value
    }
    /** logs in through the cookie gateway; returns the access token, its claims and the refresh token */
    const session = async (user: string, gw = cookieGw): Promise<{ access: string, claims: Record<string, any>, rt: string }> => {
      const res = await login(gw, user)
      if (res.status !== 200) throw new Error(`login ${user}: ${res.status} ${res.body}`)
      const access = res.json().access_token as string
      return { access, claims: payloadOf(access), rt: gw === cookieGw ? refreshCookieOf(res) : res.json().refresh_token }
    }
    const revokedSoon = (gw: StartedGateway, access: string): Promise<boolean> =>
      waitFor(async () => { const r = await api(gw, access); return r.status === 401 && r.json().code === 'token_revoked' })

    const aliceId = await addUser('alice', { scopes: ['orders:read', 'orders:write'], claims: { tenant: 't1', roles: ['user'] } })

    t.test('login: the token response, the cookie, the claims; the token works upstream', async (t) => {
      const res = await login(cookieGw, 'alice')
      t.equal(res.status, 200)
      t.equal(res.headers['cache-control'], 'no-store')
      const body = res.json()
      t.same(Object.keys(body).sort(), ['access_token', 'expires_in', 'token_type'], 'cookie transport: no refresh_token in the body')
      t.equal(body.token_type, 'Bearer')
      t.equal(body.expires_in, ACCESS_TTL_SEC)
      const cookies = setCookies(res)
      t.equal(cookies.length, 1, 'one Set-Cookie')
      const c = cookies[0]!
      t.equal(c.name, COOKIE, '__Host- cookie name')
      t.match(c.value, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/, '<sid>.<256-bit secret + tag>, base64url')
      t.same(c.attrs, { path: '/', httponly: true, secure: true, samesite: 'Strict', 'max-age': String(REFRESH_TTL_SEC) }, 'cookie attributes exactly')
      t.notOk('domain' in c.attrs, '__Host- cookies carry no Domain')

      const claims = payloadOf(body.access_token)
      const nowSec = Math.floor(clock() / 1000)
      t.equal(claims.sub, aliceId, 'sub is the user id')
      t.equal(claims.scope, 'orders:read orders:write')
      t.match(claims.jti, /^[0-9a-f-]{36}$/)
      t.type(claims.sid, 'string')
      t.ok(claims.sid.length > 0)
      t.equal(claims.iat, nowSec)
      t.equal(claims.exp, nowSec + ACCESS_TTL_SEC)
      t.equal(claims.iss, ISSUER)
      t.equal(claims.aud, AUDIENCE)
      t.equal(claims.tenant, 't1', 'extra claims are copied')
      t.same(claims.roles, ['user'])
      t.equal(claims.preferred_username, 'alice')
      const header = JSON.parse(Buffer.from(body.access_token.split('.')[0], 'base64url').toString())
      t.equal(header.typ, 'at+jwt')

      upstream.requests.length = 0
      const r = await raw(cookieGw.url, '/api/orders', { headers: { authorization: `Bearer ${body.access_token}`, cookie: `${COOKIE}=${c.value}; theme=dark` } })
      t.equal(r.status, 200, 'the access token opens a protected route')
      const seen = upstream.requests[0]!
      t.equal(seen.headers['x-user-id'], aliceId, 'upstream sees x-user-id = sub')
      t.equal(seen.headers['x-user-scopes'], 'orders:read orders:write')
      t.equal(seen.headers['x-user-tenant'], 't1')
      t.notOk(String(seen.headers.cookie ?? '').includes(c.value), 'the refresh cookie is never forwarded upstream')

      const second = await login(cookieGw, 'alice')
      t.not(payloadOf(second.json().access_token).sid, claims.sid, 'each login is a new session')
      t.not(payloadOf(second.json().access_token).jti, claims.jti)
    })

    t.test('body and both transports', async (t) => {
      const b1 = await login(bodyGw, 'alice')
      t.equal(b1.status, 200)
      t.equal(setCookies(b1).length, 0, 'body transport: no cookie')
      t.match(b1.json(), { token_type: 'Bearer', expires_in: ACCESS_TTL_SEC, refresh_token: /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/ })
      t.equal(b1.headers['cache-control'], 'no-store')
      const b2 = await login(bothGw, 'alice')
      t.equal(b2.status, 200)
      t.match(b2.json(), { refresh_token: /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/ })
      t.equal(refreshCookieOf(b2), b2.json().refresh_token, 'both: the cookie and the body carry the same token')
    })

    t.test('failed logins: one generic 401; oversized passwords refused before hashing', async (t) => {
      const unknown = await login(cookieGw, 'nobody', 'whatever')
      const wrong = await login(cookieGw, 'alice', 'not-her-password')
      t.equal(unknown.status, 401)
      t.equal(wrong.status, 401)
      t.equal(unknown.body, wrong.body, 'identical bodies for unknown user and wrong password')
      t.equal(unknown.headers['www-authenticate'], wrong.headers['www-authenticate'])
      t.equal(unknown.json().code, 'invalid_credentials')
      t.equal(setCookies(unknown).length + setCookies(wrong).length, 0, 'no cookie on failure')

      for (const [label, password, status] of [['1 MiB', 'x'.repeat(1024 * 1024), 413], ['2 KiB', 'x'.repeat(2048), 413]] as const) {
        const started = performance.now()
        const res = await login(cookieGw, 'alice', password)
        const ms = performance.now() - started
        t.equal(res.status, status, `${label} password: ${status}`)
        t.ok(ms < 1000, `${label} password answered quickly (${Math.round(ms)} ms)`)
      }
      const empty = await login(cookieGw, 'alice', '')
      t.equal(empty.status, 400, 'empty password → 400')
    })

    t.test('throttling: 429 with Retry-After, even for the right password; lifted after the lockout', async (t) => {
      await addUser('mallet')
      for (let i = 0; i < 5; i++) {
        t.equal((await login(cookieGw, 'mallet', `guess-${i}`)).status, 401, `failure ${i + 1}`)
      }
      const locked = await login(cookieGw, 'mallet', 'guess-6')
      t.equal(locked.status, 429)
      t.equal(locked.json().code, 'too_many_attempts')
      const retry = Number(locked.headers['retry-after'])
      t.ok(retry > 0 && retry <= 60, `Retry-After ${locked.headers['retry-after']}`)
      const right = await login(cookieGw, 'mallet')
      t.equal(right.status, 429, 'the correct password while locked is still 429')
      t.equal(setCookies(right).length, 0)
      clock.advanceSec(retry + 1)
      t.equal((await login(cookieGw, 'mallet')).status, 200, 'after Retry-After the right password works')
    })

    t.test('refresh via cookie, via body; two different tokens refused', async (t) => {
      const s = await session('alice')
      const r1 = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(r1.status, 200, 'cookie refresh')
      t.equal(r1.headers['cache-control'], 'no-store')
      const rt1 = refreshCookieOf(r1)
      t.not(rt1, s.rt, 'rotated')
      t.same(Object.keys(r1.json()).sort(), ['access_token', 'expires_in', 'token_type'])
      const claims = payloadOf(r1.json().access_token)
      t.equal(claims.sid, s.claims.sid, 'same session')
      t.not(claims.jti, s.claims.jti, 'new jti')
      t.equal((await api(cookieGw, r1.json().access_token)).status, 200)

      const inBody = await json(cookieGw, '/auth/refresh', { refresh_token: rt1 })
      t.equal(inBody.status, 400, 'cookie transport refuses a body refresh token')
      t.equal(inBody.json().error, 'invalid_request')

      const bs = await session('alice', bodyGw)
      const r2 = await json(bodyGw, '/auth/refresh', { refresh_token: bs.rt })
      t.equal(r2.status, 200, 'body refresh')
      t.match(r2.json().refresh_token, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/)
      t.not(r2.json().refresh_token, bs.rt)
      t.equal(setCookies(r2).length, 0)

      const x = await session('alice', bothGw)
      const y = await session('alice', bothGw)
      const both = await json(bothGw, '/auth/refresh', { refresh_token: y.rt }, { cookie: `${COOKIE}=${x.rt}`, origin: ORIGIN })
      t.equal(both.status, 400, 'cookie and body disagree')
      t.match(both.json(), { code: 'bad_request', error: 'invalid_request' })
      const same = await json(bothGw, '/auth/refresh', { refresh_token: x.rt }, { cookie: `${COOKIE}=${x.rt}`, origin: ORIGIN })
      t.equal(same.status, 200, 'cookie and body agree')
      t.equal(same.json().refresh_token, refreshCookieOf(same))
      t.equal((await json(bothGw, '/auth/refresh', { refresh_token: y.rt })).status, 200, 'the refused request spent nothing')
      const none = await json(bothGw, '/auth/refresh', {})
      t.equal(none.status, 400)
      t.equal(none.json().code, 'bad_request')
    })

    t.test('rotation: grace returns the same token; reuse after grace revokes the family', async (t) => {
      const s = await session('alice')
      const r1 = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(r1.status, 200)
      const rt1 = refreshCookieOf(r1)
      clock.advanceSec(REUSE_GRACE_SEC - 2)
      const again = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(again.status, 200, 'a concurrent tab within the grace window')
      t.equal(refreshCookieOf(again), rt1, 'gets the SAME successor')
      const access1 = again.json().access_token as string

      clock.advanceSec(3) // past the grace window
      const reuse = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(reuse.status, 400, 'reuse after grace')
      t.match(reuse.json(), { code: 'invalid_grant', error: 'invalid_grant' })
      const cleared = setCookies(reuse).find((c) => c.name === COOKIE)
      t.equal(cleared?.attrs['max-age'], '0', 'the dead cookie is cleared')
      const successor = await cookiePost(cookieGw, '/auth/refresh', rt1)
      t.equal(successor.status, 400, 'the successor is revoked with the family')
      t.equal(successor.json().error, 'invalid_grant')
      t.ok(await revokedSoon(cookieGw, access1), 'the session\'s access tokens are refused')
    })

    t.test('unknown or garbage refresh tokens: 400 invalid_grant, never 5xx', async (t) => {
      const bad = ['garbage', 'A'.repeat(43), 'x'.repeat(10_000), '../../etc/passwd', '\u0000\u00ff', `${'A'.repeat(42)}=`]
      for (const token of bad) {
        const res = await json(bodyGw, '/auth/refresh', { refresh_token: token })
        t.equal(res.status, 400, `body ${JSON.stringify(token.slice(0, 12))}`)
        t.equal(res.json().error, 'invalid_grant')
      }
      for (const token of ['garbage', 'A'.repeat(43), '%00%ff', '"quoted"']) {
        const res = await cookiePost(cookieGw, '/auth/refresh', token)
        t.equal(res.status, 400, `cookie ${token}`)
        t.equal(res.json().error, 'invalid_grant')
      }
      // an empty one is no token at all: the request is malformed (fix-logout-that-ends-nothing)
      const empty = await json(bodyGw, '/auth/refresh', { refresh_token: '' })
      t.equal(empty.status, 400, 'body ""')
      t.equal(empty.json().error, 'invalid_request')
      const numeric = await json(bodyGw, '/auth/refresh', { refresh_token: 42 })
      t.ok(numeric.status >= 400 && numeric.status < 500, `non-string token → ${numeric.status}`)
      const notJson = await raw(bodyGw.url, '/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"refresh_token":' })
      t.equal(notJson.status, 400, 'broken JSON → 400')
    })

    t.test('session max age: refresh never extends it', async (t) => {
      const s = await session('alice')
      clock.advanceSec(REFRESH_TTL_SEC - 1800)
      const r1 = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(r1.status, 200)
      const c1 = setCookies(r1).find((c) => c.name === COOKIE)!
      t.equal(c1.attrs['max-age'], String(SESSION_MAX_AGE_SEC - (REFRESH_TTL_SEC - 1800)), 'the cookie lifetime is capped at the session end')
      clock.advanceSec(SESSION_MAX_AGE_SEC - (REFRESH_TTL_SEC - 1800) - 60)
      const r2 = await cookiePost(cookieGw, '/auth/refresh', c1.value)
      t.equal(r2.status, 200, 'a minute before the session ends')
      t.equal(setCookies(r2).find((c) => c.name === COOKIE)!.attrs['max-age'], '60')
      clock.advanceSec(61)
      const r3 = await cookiePost(cookieGw, '/auth/refresh', refreshCookieOf(r2))
      t.equal(r3.status, 400, 'past sessionMaxAge')
      t.equal(r3.json().error, 'invalid_grant')
    })

    t.test('disabled user cannot refresh; changed scopes appear in the refreshed token', async (t) => {
      await addUser('dave')
      const d = await session('dave')
      await store.updateUser('dave', { disabled: true }, new Date(clock()))
      const refused = await cookiePost(cookieGw, '/auth/refresh', d.rt)
      t.equal(refused.status, 400, 'disabled user')
      t.equal(refused.json().error, 'invalid_grant')
      const relogin = await login(cookieGw, 'dave')
      t.equal(relogin.status, 401, 'disabled user cannot log in')
      t.equal(relogin.body, (await login(cookieGw, 'nobody-at-all', 'x')).body, 'with the generic body')

      const s = await session('alice')
      t.equal(s.claims.scope, 'orders:read orders:write')
      await usersSetScopes(store, 'alice', ['orders:read', 'billing:read'], { clock })
      const r = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(r.status, 200)
      t.equal(payloadOf(r.json().access_token).scope, 'orders:read billing:read', 'current scopes')
      upstream.requests.length = 0
      t.equal((await api(cookieGw, r.json().access_token)).status, 200)
      t.equal(upstream.requests[0]?.headers['x-user-scopes'], 'orders:read billing:read')
      await usersSetScopes(store, 'alice', ['orders:read', 'orders:write'], { clock })
    })

    t.test('logout: 204, cookie cleared, access token denylisted, refresh token dead; idempotent', async (t) => {
      const s = await session('alice')
      t.equal((await api(cookieGw, s.access)).status, 200)
      const out = await cookiePost(cookieGw, '/auth/logout', s.rt, { authorization: `Bearer ${s.access}` })
      t.equal(out.status, 204)
      t.equal(out.body, '')
      const cleared = setCookies(out)
      t.equal(cleared.length, 1)
      t.match(cleared[0], { name: COOKIE, value: '', attrs: { path: '/', httponly: true, secure: true, samesite: 'Strict', expires: 'Thu, 01 Jan 1970 00:00:00 GMT' } }, 'cleared with the same attributes (@fastify/cookie: Expires in the past)')
      t.ok(await revokedSoon(cookieGw, s.access), 'access token → 401 token_revoked')
      const after = await api(cookieGw, s.access)
      t.match(after.headers['www-authenticate'], /error="invalid_token"/)
      const r = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(r.status, 400)
      t.equal(r.json().error, 'invalid_grant')
      t.equal((await cookiePost(cookieGw, '/auth/logout', s.rt)).status, 204, 'repeated logout (the refresh token alone)')
      // issue 9, item 3: a revoked access token names nothing: beside a refresh token it is
      // ignored (the cookie is cleared again), alone it is refused
      const again = await cookiePost(cookieGw, '/auth/logout', s.rt, { authorization: `Bearer ${s.access}` })
      t.equal(again.status, 204, 'repeated logout with the revoked access token beside the cookie → 204')
      t.equal(setCookies(again).length, 1, 'and the cookie is cleared')
      const alone = await json(cookieGw, '/auth/logout', {}, { authorization: `Bearer ${s.access}` })
      t.equal(alone.status, 401, 'the revoked access token alone → 401')
      t.equal(alone.json().code, 'token_revoked')
      t.equal((await cookiePost(cookieGw, '/auth/logout', 'A'.repeat(43))).status, 204, 'unknown refresh token')
      t.equal((await json(cookieGw, '/auth/logout', {})).status, 204, 'nothing presented')

      const bs = await session('alice', bodyGw)
      t.equal((await json(bodyGw, '/auth/logout', { refresh_token: bs.rt })).status, 204, 'body transport logout')
      t.equal((await json(bodyGw, '/auth/refresh', { refresh_token: bs.rt })).json().error, 'invalid_grant')
      t.ok(await revokedSoon(bodyGw, bs.access), 'the session\'s access token is refused too')
    })

    t.test('logout-all: every session and access token of the user', async (t) => {
      await addUser('bob')
      const a = await session('bob')
      const c = await session('bob', bodyGw)
      const alice = await session('alice')
      t.equal((await json(cookieGw, '/auth/logout-all', {})).status, 401, 'needs an access token')
      const out = await json(cookieGw, '/auth/logout-all', {}, { authorization: `Bearer ${a.access}` })
      t.equal(out.status, 204)
      t.ok(await revokedSoon(cookieGw, a.access), 'first session access token')
      t.ok(await revokedSoon(cookieGw, c.access), 'second session access token')
      t.ok(await revokedSoon(bodyGw, c.access), 'on the other gateway too')
      t.equal((await cookiePost(cookieGw, '/auth/refresh', a.rt)).json().error, 'invalid_grant')
      t.equal((await json(bodyGw, '/auth/refresh', { refresh_token: c.rt })).json().error, 'invalid_grant')
      t.equal((await api(cookieGw, alice.access)).status, 200, 'another user is untouched')
      t.equal((await cookiePost(cookieGw, '/auth/refresh', alice.rt)).status, 200)
    })

    t.test('CSRF on cookie-carried refresh and logout; refused requests consume nothing', async (t) => {
      const s = await session('alice')
      for (const path of ['/auth/refresh', '/auth/logout']) {
        const auth: Record<string, string> = path === '/auth/logout' ? { authorization: `Bearer ${s.access}` } : {}
        const get = await raw(cookieGw.url, path, { headers: { cookie: `${COOKIE}=${s.rt}`, origin: ORIGIN, ...auth } })
        t.equal(get.status, 405, `${path} GET`)
        t.equal(get.headers.allow, 'POST')
        for (const type of ['application/x-www-form-urlencoded', 'text/plain', 'multipart/form-data; boundary=x']) {
          const res = await raw(cookieGw.url, path, { method: 'POST', headers: { cookie: `${COOKIE}=${s.rt}`, origin: ORIGIN, 'content-type': type, ...auth }, body: 'a=b' })
          t.equal(res.status, 415, `${path} ${type}`)
        }
        const noOrigin = await raw(cookieGw.url, path, { method: 'POST', headers: { cookie: `${COOKIE}=${s.rt}`, 'content-type': 'application/json', ...auth }, body: '{}' })
        t.equal(noOrigin.status, 403, `${path} without Origin`)
        t.equal(noOrigin.json().code, 'csrf_origin')
        for (const origin of ['null', 'https://evil.example.test', 'https://app.example.test.evil.test', 'http://app.example.test']) {
          const res = await cookiePost(cookieGw, path, s.rt, { origin, ...auth })
          t.equal(res.status, 403, `${path} Origin ${origin}`)
        }
        const cross = await cookiePost(cookieGw, path, s.rt, { 'sec-fetch-site': 'cross-site', ...auth })
        t.equal(cross.status, 403, `${path} Sec-Fetch-Site: cross-site`)
        t.equal(cross.json().code, 'csrf_fetch_site')
      }
      t.equal((await api(cookieGw, s.access)).status, 200, 'refused logouts revoked nothing')
      const ok = await cookiePost(cookieGw, '/auth/refresh', s.rt)
      t.equal(ok.status, 200, 'allowed origin: the untouched refresh token still works')
      const selfOrigin = await cookiePost(cookieGw, '/auth/refresh', refreshCookieOf(ok), { origin: cookieGw.url, 'sec-fetch-site': 'same-origin' })
      t.equal(selfOrigin.status, 200, 'the gateway\'s own origin is allowed')
      const out = await cookiePost(cookieGw, '/auth/logout', refreshCookieOf(selfOrigin))
      t.equal(out.status, 204, 'allowed origin: logout')
    })

    t.test('admin API', async (t) => {
      const admin = (method: string, path: string, body?: unknown, token = ADMIN_TOKEN, gw = cookieGw): Promise<RawResponse> =>
        raw(gw.adminUrl, path, {
          method,
          headers: { ...(token === '' ? {} : { authorization: `Bearer ${token}` }), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
          ...(body === undefined ? {} : { body: JSON.stringify(body) }),
        })
      const erinId = await addUser('erin')
      const loginAt = new Date(clock()).toISOString()
      const s1 = await session('erin')
      const s2 = await session('erin')

      for (const [label, token] of [['missing', ''], ['wrong', 'not-the-admin-token'], ['prefix', ADMIN_TOKEN.slice(0, -1)]] as const) {
        t.equal((await admin('GET', '/admin/users/erin/sessions', undefined, token)).status, 401, `${label} admin token: list`)
        t.equal((await admin('POST', '/admin/users/erin/revoke', undefined, token)).status, 401, `${label} admin token: revoke user`)
      }
      const basic = await raw(cookieGw.adminUrl, '/admin/users/erin/sessions', { headers: { authorization: `Basic ${Buffer.from(`x:${ADMIN_TOKEN}`).toString('base64')}` } })
      t.equal(basic.status, 401, 'Basic auth is not the admin token')
      t.equal((await api(cookieGw, s1.access)).status, 200, 'refused admin calls revoked nothing')

      clock.advanceSec(30)
      const usedAt = new Date(clock()).toISOString()
      const refreshed = await cookiePost(cookieGw, '/auth/refresh', s2.rt, { 'user-agent': 'other-agent/2' })
      t.equal(refreshed.status, 200)
      const list = await admin('GET', '/admin/users/erin/sessions')
      t.equal(list.status, 200)
      const sessions = list.json().sessions as Array<Record<string, any>>
      t.equal(sessions.length, 2)
      const bySid = new Map(sessions.map((x) => [x.sid, x]))
      t.match(bySid.get(s1.claims.sid), { createdAt: loginAt, lastUsedAt: loginAt, userAgent: UA, ip: '127.0.0.1', active: true, revokedAt: null })
      t.match(bySid.get(s2.claims.sid), { createdAt: loginAt, lastUsedAt: usedAt, userAgent: 'other-agent/2', ip: '127.0.0.1', active: true })
      t.notOk(JSON.stringify(sessions).includes(s1.rt), 'no refresh token in the listing')
      t.equal((await admin('GET', '/admin/users/nobody/sessions')).status, 404)

      const del = await admin('DELETE', `/admin/sessions/${s1.claims.sid}`)
      t.equal(del.status, 204, 'revoke one session')
      t.ok(await revokedSoon(cookieGw, s1.access), 'its access token is refused')
      t.equal((await cookiePost(cookieGw, '/auth/refresh', s1.rt)).json().error, 'invalid_grant', 'its refresh token is dead')
      const s2access = refreshed.json().access_token as string
      t.equal((await api(cookieGw, s2access)).status, 200, 'the other session lives')
      t.match((await admin('GET', '/admin/users/erin/sessions')).json().sessions.find((x: any) => x.sid === s1.claims.sid), { active: false, revokeReason: 'admin' })
      t.equal((await admin('DELETE', '/admin/sessions/no-such-session')).status, 404, 'unknown session')

      const claims = payloadOf(s2access)
      const jti = await admin('POST', '/admin/revocations/jti', { jti: claims.jti, exp: claims.exp })
      t.equal(jti.status, 204, 'revoke a jti')
      t.ok(await revokedSoon(cookieGw, s2access), 'that access token → 401 token_revoked')
      t.ok(await revokedSoon(bodyGw, s2access), 'on every gateway of the database')
      t.equal((await admin('POST', '/admin/revocations/jti', { jti: 'x' })).status, 400, 'exp is required')
      const r2 = await cookiePost(cookieGw, '/auth/refresh', refreshCookieOf(refreshed))
      t.equal(r2.status, 200, 'a jti revocation leaves the session alive')
      t.equal((await api(cookieGw, r2.json().access_token)).status, 200)

      const ru = await admin('POST', '/admin/users/erin/revoke')
      t.equal(ru.status, 200, 'revoke a user')
      t.same(ru.json(), { revoked: { user: 'erin', sessions: [s2.claims.sid] } })
      t.ok(await revokedSoon(cookieGw, r2.json().access_token), 'every access token of the user')
      t.equal((await cookiePost(cookieGw, '/auth/refresh', refreshCookieOf(r2))).json().error, 'invalid_grant')
      t.equal((await admin('POST', '/admin/users/nobody/revoke')).status, 404)
      t.equal(payloadOf(r2.json().access_token).sub, erinId)

      const absent = await admin('GET', '/admin/users/erin/sessions', undefined, ADMIN_TOKEN, bodyGw)
      t.equal(absent.status, 404, 'no admin API without admin.token')
      t.equal((await admin('POST', '/admin/revocations/jti', { jti: 'x', exp: 1 }, ADMIN_TOKEN, bodyGw)).status, 404)
      t.equal((await raw(bodyGw.adminUrl, '/healthz')).status, 200, 'the admin listener itself is up')
    })
  })
}
