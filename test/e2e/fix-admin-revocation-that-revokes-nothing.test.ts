import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { AUDIENCE, ISSUER, baseConfig, goodClaims, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'
import { startJwksServer } from '../tokens/issuers/helpers.js'
import { openStore } from '../../src/sessions/store.js'

// fix-admin-revocation-that-revokes-nothing (found by a hostile review, stop 33): the admin
// API answered 204 — and its admin_action event said "ok" — for a revocation that revoked
// nothing. `POST /admin/revocations/jti` with an `exp` already past (0, 1, a typo, a stale
// script's value) wrote nothing, as no token with that exp can pass, while the token the
// operator meant (its real exp ahead) went on passing; with an `iss` no token carries (a
// trailing slash, another case, an issuer not configured) the revocation was kept under a key
// no token matches. The operator was told a stolen token was cut off when it was not. Now both
// are a 400 bad_request saying nothing was revoked, and the event says so.
// Real parts: a gateway on 127.0.0.1, the embedded store and its revocation feed, a real JWKS
// server for a configured identity provider, a recording upstream.

const ADMIN_TOKEN = 'e'.repeat(40)
const partner = 'https://partner-idp.test'

t.test('a revocation that would revoke nothing is refused, and says so', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  let logs = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { logs += String(chunk); done() } }))
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], { admin: { token: ADMIN_TOKEN } }),
    issuers: [{ name: 'partner', issuer: partner, jwksUri: jwks.jwksUrl, audiences: [AUDIENCE], algorithms: ['ES256'] }],
  }, { store: await openStore({ dataDir: 'memory://' }), logger })
  const now = Math.floor(Date.now() / 1000)
  const exp = now + 600
  const admin = async (path: string, body: unknown): Promise<RawResponse> =>
    await raw(gw.adminUrl, path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify(body),
    })
  const jsonOf = (res: RawResponse): Record<string, any> => res.body === '' ? {} : res.json()
  const passes = async (token: string): Promise<number> =>
    (await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })).status
  const stolen = signWith(key, goodClaims({ jti: 'jti-stolen', sub: 'alice', exp }))
  t.equal(await passes(stolen), 200, 'the stolen token opens its route')

  const refused: Array<[string, string, unknown, RegExp]> = [
    ['exp 0', '/admin/revocations/jti', { jti: 'jti-stolen', exp: 0 }, /exp is past.*nothing was revoked/],
    ['exp 1', '/admin/revocations/jti', { jti: 'jti-stolen', exp: 1 }, /exp is past/],
    ['exp past by more than the clock skew', '/admin/revocations/jti', { jti: 'jti-stolen', exp: now - 400 }, /exp is past/],
    ['the own issuer with a trailing slash', '/admin/revocations/jti', { jti: 'jti-stolen', exp, iss: `${ISSUER}/` }, /names no issuer this gateway trusts.*nothing was revoked/],
    ['the own issuer in upper case', '/admin/revocations/jti', { jti: 'jti-stolen', exp, iss: ISSUER.toUpperCase() }, /names no issuer/],
    ['an issuer not configured', '/admin/revocations/jti', { jti: 'jti-stolen', exp, iss: 'https://not-configured.example' }, /names no issuer/],
    ['a whole token already expired', '/admin/revocations/token', { token: signWith(key, goodClaims({ jti: 'jti-old', exp: now - 400, iat: now - 1000 })) }, /exp is past/],
  ]
  for (const [what, path, body, says] of refused) {
    const res = await admin(path, body)
    t.equal(res.status, 400, `${what}: 400 (it was a 204)`)
    t.equal(jsonOf(res).code, 'bad_request', `${what}: bad_request`)
    t.match(jsonOf(res).message, says, `${what}: the answer says why, and that nothing was revoked`)
  }
  t.equal(await passes(stolen), 200, 'none of them revoked the stolen token')

  t.equal((await admin('/admin/revocations/jti', { jti: 'jti-partner', exp, iss: partner })).status, 204, 'a configured provider\'s issuer, exactly: 204')
  t.equal((await admin('/admin/revocations/jti', { jti: 'jti-stolen', exp, iss: ISSUER })).status, 204, 'the own issuer, exactly: 204')
  await until('the stolen token refused', async () => await passes(stolen) === 401)

  const eventLines = (): string[] => logs.split('\n').filter((l) => l.includes('"admin_action"'))
  await until('the events written', async () => eventLines().length >= refused.length + 2)
  const events = eventLines().map((l) => JSON.parse(l))
  t.equal(events.filter((e) => e.outcome === 'error' && e.code === 'bad_request').length, refused.length, 'each refusal is an admin_action event with outcome error (it said ok)')
  t.equal(logs.match(/"jti_revoked"/g)?.length ?? 0, 2, 'only the two real revocations wrote a jti_revoked event')
})
