import t, { type Test } from 'tap'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { openStore } from '../../src/sessions/store.js'
import { baseConfig, makeKey, raw, startGateway, type RawResponse, type StartedGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'

// fix-logout-that-ends-nothing (found by a hostile review, stop 33): the README promises a
// logout is "never a 204 that ended nothing", yet the refresh token in a logout body was read
// only when it was a string. `{"refresh_token": ["<rt>"]}`, `{…: {"token": "<rt>"}}`,
// `{…: null}`, a misspelt `{"refreshToken": "<rt>"}` and `{}` answered 204 and the session
// went on refreshing; with `transport: both`, a cookie A and a body `{"refresh_token": ["B"]}`
// ended A and left B alive, where the string form is a 400. Now a refresh or logout body is
// `{"refresh_token": "…"}` or `{}`, anything else a 400 naming what is wrong; and with
// `transport: body` a logout that presents no credential at all is a 400 (such a client always
// has its token). With the cookie an empty logout stays a 204 that clears it: a browser cannot
// know its HttpOnly cookie expired. Real parts: gateways on 127.0.0.1, the embedded store.

const key = makeKey('EdDSA')
const COOKIE = '__Host-portcullis-rt'
const ORIGIN = 'https://app.example.test'

async function gatewayFor (t: Test, transport: 'cookie' | 'body' | 'both'): Promise<StartedGateway> {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const store = await openStore({ dataDir: 'memory://' })
  for (const name of ['alice', 'bob']) await usersAdd(store, { name, password: `pw-${name}`, scopes: ['orders:read'] })
  return await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], {
    tokens: { refresh: { transport }, allowedOrigins: [ORIGIN] },
  }), { store })
}

const post = async (gw: StartedGateway, path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
  await raw(gw.url, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: typeof body === 'string' ? body : JSON.stringify(body) })
const jsonOf = (res: RawResponse): Record<string, any> => res.body === '' ? {} : res.json()
/** the refresh token a login or refresh answer carries, in the body or in its cookie */
function refreshOf (res: RawResponse): string {
  if (typeof jsonOf(res).refresh_token === 'string') return jsonOf(res).refresh_token
  const cookie = ([] as string[]).concat(res.headers['set-cookie'] ?? []).find((c) => c.startsWith(`${COOKIE}=`))
  return cookie?.slice(COOKIE.length + 1).split(';')[0] ?? ''
}
const cookieHeaders = (rt: string): Record<string, string> => ({ cookie: `${COOKIE}=${rt}`, origin: ORIGIN, 'sec-fetch-site': 'same-site' })

t.test('transport body: a logout body of another shape, or none at all, is refused and ends nothing', async (t) => {
  const gw = await gatewayFor(t, 'body')
  const login = await post(gw, '/auth/login', { username: 'alice', password: 'pw-alice' })
  t.equal(login.status, 200, 'alice logs in')
  let rt = refreshOf(login)
  for (const [what, body, says] of [
    ['the token in an array', { refresh_token: [rt] }, /refresh_token must be a non-empty string/],
    ['the token in an object', { refresh_token: { token: rt } }, /refresh_token must be a non-empty string/],
    ['null', { refresh_token: null }, /refresh_token must be a non-empty string/],
    ['an empty string', { refresh_token: '' }, /refresh_token must be a non-empty string/],
    ['a misspelt property', { refreshToken: rt }, /"refreshToken" is not allowed/],
    ['the token beside another property', { refresh_token: rt, everywhere: true }, /"everywhere" is not allowed/],
    ['an array body', [rt], /must be a JSON object/],
    ['an empty object and no access token', {}, /nothing was logged out/],
  ] as Array<[string, unknown, RegExp]>) {
    const res = await post(gw, '/auth/logout', body)
    t.equal(res.status, 400, `${what}: 400 (it was a 204)`)
    t.equal(jsonOf(res).code, 'bad_request', `${what}: bad_request`)
    t.match(jsonOf(res).message, says, `${what}: the answer says what is wrong`)
  }
  t.equal((await raw(gw.url, '/auth/logout', { method: 'POST' })).status, 415, 'no body at all: 415 (a JSON body is required), not a 204')

  const refreshed = await post(gw, '/auth/refresh', { refresh_token: rt })
  t.equal(refreshed.status, 200, 'the session is alive: none of those ended it')
  rt = refreshOf(refreshed)
  t.equal((await post(gw, '/auth/refresh', { refresh_token: rt, grant_type: 'refresh_token' })).status, 400, 'a refresh body with another property: 400')
  t.equal((await post(gw, '/auth/logout', { refresh_token: rt })).status, 204, 'the logout the client meant: 204')
  t.equal((await post(gw, '/auth/refresh', { refresh_token: rt })).status, 400, 'and the session is over')
  t.equal((await post(gw, '/auth/logout', { refresh_token: rt })).status, 204, 'a repeated logout with the refresh token stays a 204')
  const access = jsonOf(await post(gw, '/auth/login', { username: 'bob', password: 'pw-bob' })).access_token
  t.equal((await post(gw, '/auth/logout', {}, { authorization: `Bearer ${access}` })).status, 204, 'an access token alone is something to log out: 204')
})

t.test('transport both: a cookie and a body token that is not a string are refused, and neither ends', async (t) => {
  const gw = await gatewayFor(t, 'both')
  const a = refreshOf(await post(gw, '/auth/login', { username: 'alice', password: 'pw-alice' }))
  const b = refreshOf(await post(gw, '/auth/login', { username: 'bob', password: 'pw-bob' }))
  const res = await post(gw, '/auth/logout', { refresh_token: [b] }, cookieHeaders(a))
  t.equal(res.status, 400, 'cookie A and body ["B"]: 400 (it ended A and answered 204)')
  const stillA = await post(gw, '/auth/refresh', {}, cookieHeaders(a))
  t.equal(stillA.status, 200, 'A was not ended')
  t.equal((await post(gw, '/auth/refresh', { refresh_token: b })).status, 200, 'nor B')
  t.equal((await post(gw, '/auth/logout', {}, cookieHeaders(refreshOf(stillA)))).status, 204, 'a cookie logout with {}: 204')
})

t.test('transport cookie: a body token of any type is refused; an empty logout clears the cookie', async (t) => {
  const gw = await gatewayFor(t, 'cookie')
  const rt = refreshOf(await post(gw, '/auth/login', { username: 'alice', password: 'pw-alice' }, { origin: ORIGIN }))
  t.not(rt, '', 'the refresh token arrives in its cookie')
  const res = await post(gw, '/auth/logout', { refresh_token: ['x'] }, cookieHeaders(rt))
  t.equal(res.status, 400, 'a body token in an array: 400 (it was a 204)')
  t.equal((await post(gw, '/auth/refresh', {}, cookieHeaders(rt))).status, 200, 'the session is alive')
  // a browser whose cookie expired cannot know it: its logout is not an error
  const empty = await post(gw, '/auth/logout', {}, { origin: ORIGIN, 'sec-fetch-site': 'same-site' })
  t.equal(empty.status, 204, 'no cookie, no access token: 204')
  t.match(String(empty.headers['set-cookie']), new RegExp(`^${COOKIE}=;`), 'and the cookie is cleared')
})
