import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { ISSUER, baseConfig, goodClaims, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'
import { openStore } from '../../src/sessions/store.js'

// fix-admin-api-refuses-unknown-input: Fastify's default validator removes the properties a
// schema does not declare (`removeAdditional`) and coerces types (`coerceTypes: 'array'`). On
// the admin API that turned an operator's typo into a different action without a word:
// `{"jti", "exp", "isss": <provider>}` revoked the bare jti instead of the provider's, a
// `{"token", "expiry"}` passed, `"exp": "1900000000"` and `"jti": ["x"]` were taken as a number
// and a string. Now each is a 400 bad_request naming what was wrong, and nothing is revoked.
// Real parts: a gateway on 127.0.0.1, the embedded store, a recording upstream.

const ADMIN_TOKEN = 'c'.repeat(40)
/** an answer's JSON, or {} for an empty one (a 204: what the code before this fix answered) */
const jsonOf = (res: RawResponse): Record<string, any> => res.body === '' ? {} : res.json()
const partner = 'https://partner-idp.test'

t.test('the admin API refuses what it does not understand, and revokes nothing', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const store = await openStore({ dataDir: 'memory://' })
  let logs = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { logs += String(chunk); done() } }))
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
  ], { admin: { token: ADMIN_TOKEN } }), { store, logger })
  const exp = Math.floor(Date.now() / 1000) + 600
  const admin = async (path: string, body: unknown): Promise<RawResponse> =>
    await raw(gw.adminUrl, path, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: typeof body === 'string' ? body : JSON.stringify(body),
    })
  const own = (jti: string): string => signWith(key, goodClaims({ jti, sub: 'alice' }))
  const passes = async (token: string): Promise<number> =>
    (await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })).status
  const token = own('jti-typo')
  t.equal(await passes(token), 200, 'the token opens its route before any revocation')

  const refused: Array<[string, string, unknown, RegExp]> = [
    ['a typo beside the known properties', '/admin/revocations/jti', { jti: 'jti-typo', exp, isss: partner }, /body\/isss: not allowed/],
    ['an unknown property alone', '/admin/revocations/jti', { jti: 'jti-typo', exp, until: exp }, /body\/until: not allowed/],
    ['exp as a string of digits', '/admin/revocations/jti', { jti: 'jti-typo', exp: String(exp) }, /body\/exp: must be integer/],
    ['exp as a boolean', '/admin/revocations/jti', { jti: 'jti-typo', exp: true }, /body\/exp: must be integer/],
    ['jti as an array of one string', '/admin/revocations/jti', { jti: ['jti-typo'], exp }, /body\/jti: must be string/],
    ['iss as a number', '/admin/revocations/jti', { jti: 'jti-typo', exp, iss: 7 }, /body\/iss: must be string/],
    ['the token endpoint with an extra property', '/admin/revocations/token', { token, expiry: exp }, /body\/expiry: not allowed/],
    ['the token as an array', '/admin/revocations/token', { token: [token] }, /body\/token: must be string/],
  ]
  for (const [what, path, body, names] of refused) {
    const res = await admin(path, body)
    t.equal(res.status, 400, `${what}: 400`)
    t.equal(jsonOf(res).code, 'bad_request', `${what}: the stable code`)
    t.match(jsonOf(res).message, names, `${what}: the answer names the problem`)
  }

  const many = await admin('/admin/revocations/jti', { jti: 'jti-typo', exp, ...Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`p${i}`, i])) })
  t.equal(many.status, 400, 'forty unknown properties: 400')
  t.match(jsonOf(many).message, /; and 35 more$/, 'the answer names five problems and counts the rest')
  t.ok(String(jsonOf(many).message).length < 400, 'and stays short')

  // nothing above revoked the token, on any key: it still passes (a fresh verification each
  // time would not hide a revocation: the denylist is checked on every request)
  t.equal(await passes(token), 200, 'no refused body revoked anything')

  t.equal((await admin('/admin/revocations/jti', { jti: 'jti-typo', exp })).status, 204, 'the body the operator meant is accepted')
  await until('the revoked jti refused', async () => await passes(token) === 401)
  t.equal(await passes(own('jti-other')), 200, 'another token still passes')
  t.equal((await admin('/admin/revocations/jti', { jti: 'jti-own', exp, iss: ISSUER })).status, 204, 'a jti with its (own) iss: accepted')
  t.equal((await admin('/admin/revocations/token', { token: own('jti-by-token') })).status, 204, 'a whole token: accepted')

  // every refusal is an admin_action event with its code; the token is never logged
  const eventLines = (): string[] => logs.split('\n').filter((l) => l.includes('"admin_action"'))
  await until('the events written', async () => eventLines().length >= refused.length + 1 + 3)
  const events = eventLines().map((l) => JSON.parse(l))
  const refusedEvents = events.filter((e) => e.outcome === 'error')
  t.equal(refusedEvents.length, refused.length + 1, 'one refused event per refused request')
  t.ok(refusedEvents.every((e) => e.code === 'bad_request'), 'each with the code bad_request')
  t.notOk(logs.includes(token), 'the token never reaches the log')
})
