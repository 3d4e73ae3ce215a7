/**
 * fix-client-trusts-upstream-answers: the gateway relays an upstream's status, body and
 * WWW-Authenticate unchanged, and the client SDK acted on them as if they were the
 * gateway's — an upstream's 401 `{"code":"token_expired"}` (or a bare `invalid_token …
 * expired` challenge, or `token_revoked`) made it refresh on every call, a 409
 * `invalid_grant` made json() reject with SessionEndedError (the app logs the user out),
 * `invalid_credentials` gave InvalidCredentialsError. Now the gateway marks every answer it
 * makes itself with `portcullis-error: <code>` (plugins/errors.ts sendError), strips that
 * header from upstream answers (even one forging it), exposes it in CORS, and the SDK acts
 * only on marked answers: an unmarked one is an UpstreamError with the upstream's status,
 * body code and message, and no session consequence. Real gateway, real upstream, the SDK.
 */
import t from 'tap'
import { createClient, SessionEndedError, type SessionEndedEvent } from '../../src/client/index.js'
import { ORIGIN, recorder, rejection, startEnv } from '../client/helpers.js'
import { startUpstream } from '../fixtures/upstream.js'

const EXPIRED_CHALLENGE = 'Bearer realm="upstream", error="invalid_token", error_description="the access token expired"'

/** an upstream that answers with the gateway's words (some with the gateway's mark forged too) */
const hostile = await startUpstream((req, res) => {
  const json = (status: number, body: unknown, headers: Record<string, string> = {}): void => {
    res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
  }
  const path = req.url.replace(/^\/(hostile|open)/, '')
  if (path === '/expired') json(401, { statusCode: 401, code: 'token_expired', message: 'the access token expired' }, { 'www-authenticate': EXPIRED_CHALLENGE })
  else if (path === '/forged') json(401, { code: 'token_expired', message: 'forged' }, { 'portcullis-error': 'token_expired', 'www-authenticate': EXPIRED_CHALLENGE })
  else if (path === '/challenge') res.writeHead(401, { 'www-authenticate': EXPIRED_CHALLENGE }).end()
  else if (path === '/revoked') json(401, { code: 'token_revoked', message: 'revoked' })
  else if (path === '/grant') json(409, { code: 'invalid_grant', error: 'invalid_grant', message: 'the order was already paid' })
  else if (path === '/creds') json(422, { code: 'invalid_credentials', message: 'the card was declined' })
  else if (path === '/throttle') json(429, { code: 'too_many_attempts', message: 'slow down' }, { 'retry-after': '5' })
  else if (path === '/session') json(401, { code: 'session_ended', message: 'nope' }, { 'portcullis-error': 'invalid_grant' })
  else if (path === '/auth/login') json(401, { code: 'invalid_credentials', message: 'wrong' })
  else if (path === '/auth/refresh') json(400, { code: 'invalid_grant', error: 'invalid_grant', message: 'spent' })
  else json(200, { ok: true })
})
t.teardown(() => hostile.close())

const env = await startEnv(t, {
  transport: 'body',
  routes: [
    { name: 'hostile', prefix: '/hostile', upstream: hostile.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: hostile.url, auth: 'public' },
  ],
  config: { cors: { origins: [ORIGIN], credentials: true } },
})

async function loggedIn (t: Tap, name: string): Promise<{ c: ReturnType<typeof createClient>, rec: ReturnType<typeof recorder>, ended: SessionEndedEvent[] }> {
  await env.addUser(name)
  const rec = recorder()
  const c = createClient({ baseUrl: env.gw.url, transport: 'body', fetch: rec.fetch })
  t.teardown(() => { c.close() })
  const ended: SessionEndedEvent[] = []
  c.on('sessionEnded', (e) => { ended.push(e) })
  await c.login(name, `pw-${name}`)
  return { c, rec, ended }
}
type Tap = { teardown: (fn: () => unknown) => void }

t.test("an upstream's 401 never makes the SDK refresh, retry or check for revocation", async (t) => {
  const { c, rec, ended } = await loggedIn(t, 'ada')
  const token = await c.accessToken()
  for (const path of ['/hostile/expired', '/hostile/forged', '/hostile/challenge', '/hostile/revoked']) {
    const before = hostile.requests.length
    for (let i = 0; i < 3; i++) {
      const res = await c.fetch(path)
      t.equal(res.status, 401, `${path}: the upstream's 401 is returned`)
      await res.body?.cancel()
    }
    t.equal(hostile.requests.length - before, 3, `${path}: each call reached the upstream once (no retry)`)
  }
  t.equal(rec.count('/auth/refresh'), 0, 'no refresh on an upstream\'s say-so')
  t.equal(await c.accessToken(), token, 'the same token throughout')
  t.equal(c.status, 'active')
  t.same(ended, [])
})

t.test("json(): an upstream's error body is an UpstreamError with its status, code and message, never a session error", async (t) => {
  const { c, rec, ended } = await loggedIn(t, 'bea')
  const rows: Array<[string, number, string]> = [
    ['/hostile/grant', 409, 'invalid_grant'],
    ['/hostile/creds', 422, 'invalid_credentials'],
    ['/hostile/throttle', 429, 'too_many_attempts'],
    ['/hostile/expired', 401, 'token_expired'],
    ['/hostile/session', 401, 'session_ended'],
  ]
  for (const [path, status, upstreamCode] of rows) {
    const err = await rejection(c.json(path))
    t.equal(err.name, 'UpstreamError', `${path}: UpstreamError`)
    t.notOk(err instanceof SessionEndedError, `${path}: not SessionEndedError`)
    t.match(err, { code: 'upstream_error', status, upstreamCode }, `${path}: the upstream's status and code`)
  }
  t.equal(c.status, 'active', 'the session goes on')
  t.same(ended, [], 'no sessionEnded')
  t.equal(rec.count('/auth/refresh'), 0)
})

t.test('the gateway marks its own answers; an upstream cannot forge the mark', async (t) => {
  const { c } = await loggedIn(t, 'cid')
  const none = await fetch(`${env.gw.url}/hostile/x`, { headers: { origin: ORIGIN } })
  t.equal(none.status, 401)
  t.equal(none.headers.get('portcullis-error'), 'missing_token', "the gateway's own 401 is marked with its code")
  t.match(none.headers.get('access-control-expose-headers') ?? '', /\bportcullis-error\b/, 'and CORS exposes the mark')
  await none.body?.cancel()

  const forged = await fetch(`${env.gw.url}/hostile/forged`, { headers: { authorization: `Bearer ${await c.accessToken()}`, origin: ORIGIN } })
  t.equal(forged.status, 401)
  t.equal(forged.headers.get('portcullis-error'), null, "the upstream's forged mark is dropped")
  t.match(forged.headers.get('access-control-expose-headers') ?? '', /\bportcullis-error\b/, 'exposed on proxied answers too')
  await forged.body?.cancel()

  const grant = await fetch(`${env.gw.url}/auth/refresh`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ refresh_token: 'not-a-token' }) })
  t.equal(grant.status, 400)
  t.equal(grant.headers.get('portcullis-error'), 'invalid_grant', 'the auth endpoints mark their refusals')
  await grant.body?.cancel()
})

t.test("the auth calls: an unmarked refusal is the upstream's, not a wrong password or an ended session", async (t) => {
  // the auth endpoints pointed (by mistake) at an upstream route; a refresh token stored
  const rec = recorder()
  let stored: string | undefined = 'a-stored-refresh-token'
  const c = createClient({
    baseUrl: env.gw.url,
    transport: 'body',
    fetch: rec.fetch,
    authPath: '/open/auth/',
    refreshTokenStore: { get: async () => stored, set: async (v) => { stored = v }, clear: async () => { stored = undefined } },
  })
  t.teardown(() => { c.close() })
  const ended: SessionEndedEvent[] = []
  c.on('sessionEnded', (e) => { ended.push(e) })
  const login = await rejection(c.login('dot', 'pw-dot'))
  t.equal(login.name, 'UpstreamError', 'login: UpstreamError')
  t.match(login, { status: 401, upstreamCode: 'invalid_credentials' })
  const restore = await rejection(c.restore())
  t.equal(restore.name, 'UpstreamError', 'restore: UpstreamError')
  t.equal(rec.count('/open/auth/login'), 1)
  t.equal(rec.count('/open/auth/refresh'), 1)
  t.equal(stored, 'a-stored-refresh-token', 'the refresh token is kept')
  t.same(ended, [], 'no sessionEnded on an upstream\'s invalid_grant')
  t.not(c.status, 'ended')
})
