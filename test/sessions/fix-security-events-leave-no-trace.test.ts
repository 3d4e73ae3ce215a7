/**
 * Regression (issue 9 item 7): refresh-token reuse (theft: a whole family revoked), failed
 * and throttled logins, revocations and admin actions wrote no line of their own. Each is
 * now one `security_event` line with its `event` type, never a secret, and a counter hook.
 * The lines are captured from a real pino logger writing JSON, and the whole output is
 * searched for every password, token and hash the test used.
 */
import t from 'tap'
import { Writable } from 'node:stream'
import Fastify from 'fastify'
import { pino } from 'pino'
import adminApi from '../../plugins/admin-api.js'
import errorsPlugin from '../../plugins/errors.js'
import { SecurityEvents } from '../../src/security-events.js'
import { hashRefreshToken } from '../../src/sessions/refresh-tokens.js'
import { SessionService } from '../../src/sessions/service.js'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import { addUser } from '../../src/sessions/users.js'
import { usersPasswd, sessionsRevoke } from '../../src/sessions/admin-commands.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const ADMIN_TOKEN = 'an-admin-token-of-at-least-32-characters'
const b = backends(t)
const backend = b.names[0] ?? 'embedded'

t.test(`security events (${backend})`, async (t) => {
  const store = await b.open(backend, t)
  const text: string[] = []
  const sink = new Writable({ write (chunk: Buffer, _enc, done) { text.push(chunk.toString('utf8')); done() } })
  const logger = pino({ level: 'info' }, sink)
  const counted: string[] = []
  const events = new SecurityEvents({ logger, onEvent: (event, label) => { counted.push(`${event}:${label}`) } })
  const lines = (): Array<Record<string, unknown>> => text.join('').split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>)
  const ofType = (event: string): Array<Record<string, unknown>> => lines().filter((l) => l.event === event)

  const clock = makeClock()
  const signer = makeTestSigner(clock)
  const svc = new SessionService({
    store, clock, signAccessToken: signer.sign, events, throttle: new LoginThrottle({ store, clock, settings: { perAccount: 3 } }), options: { reuseGraceSec: 10 },
  })
  const secrets: string[] = ['correct horse battery', 'wrong-1', 'wrong-2', 'wrong-3', 'wrong-4', 'wrong-5', ADMIN_TOKEN, 'new password 2']
  await addUser(store, { name: 'alice', password: 'correct horse battery' }, clock())
  const client = { ip: '203.0.113.9', userAgent: 'tap' }

  const p1 = await svc.login('alice', 'correct horse battery', client)
  secrets.push(p1.refreshToken, p1.accessToken, hashRefreshToken(p1.refreshToken))
  t.match(ofType('login_succeeded'), [{ msg: 'security_event', level: 30, user: 'alice', sub: p1.sub, sid: p1.sid, ip: '203.0.113.9' }])

  await t.rejects(svc.login('alice', 'wrong-1', client))
  await t.rejects(svc.login('nobody', 'wrong-2', client))
  t.match(ofType('login_failed'), [{ user: 'alice', reason: 'bad_password', ip: '203.0.113.9' }, { user: 'nobody', reason: 'unknown_user' }])
  await t.rejects(svc.login('alice', 'wrong-3', client))
  await t.rejects(svc.login('alice', 'wrong-4', client), { code: 'invalid_credentials' }, 'the third attempt on alice is verified')
  await t.rejects(svc.login('alice', 'wrong-5', client), { code: 'too_many_attempts' })
  t.match(ofType('login_throttled'), [{ level: 40, user: 'alice', limit: 'account', retryAfterSec: 60 }])

  clock.advanceSec(61)
  const p2 = await svc.refresh(p1.refreshToken)
  secrets.push(p2.refreshToken, p2.accessToken)
  clock.advanceSec(11)
  await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'reuse_detected' })
  t.match(ofType('refresh_token_reuse'), [{ level: 40, sid: p1.sid, sub: p1.sub }])
  t.match(ofType('session_revoked'), [{ sid: p1.sid, reason: 'reuse' }])

  const p3 = await svc.login('alice', 'correct horse battery', client)
  secrets.push(p3.refreshToken, p3.accessToken)
  await svc.logout(p3.refreshToken, signer.verify(p3.accessToken))
  t.match(ofType('session_revoked').at(-1), { sid: p3.sid, sub: p3.sub, reason: 'logout' })
  t.match(ofType('jti_revoked'), [{ jti: p3.jti, reason: 'logout' }])
  await svc.logoutAll(p3.sub)
  t.match(ofType('user_revoked'), [{ sub: p3.sub, reason: 'logout_all' }])
  await usersPasswd(store, 'alice', 'new password 2', { clock, events })
  t.match(ofType('user_revoked').at(-1), { sub: p3.sub, user: 'alice', reason: 'password_changed' })

  // the admin API: one admin_action per request, refused ones included
  const app = Fastify()
  await app.register(errorsPlugin, { realm: 'test' })
  await app.register(adminApi, { token: ADMIN_TOKEN, service: svc, store, selfIssuer: () => 'https://gw.test', trustedIssuers: () => [], events })
  t.teardown(() => app.close())
  const auth = { authorization: `Bearer ${ADMIN_TOKEN}` }
  t.equal((await app.inject({ method: 'GET', url: '/admin/users/alice/sessions', headers: auth })).statusCode, 200)
  t.equal((await app.inject({ method: 'POST', url: '/admin/users/alice/revoke', headers: { authorization: 'Bearer wrong' } })).statusCode, 401)
  t.equal((await app.inject({ method: 'POST', url: '/admin/users/alice/revoke', headers: auth })).statusCode, 200)
  t.equal((await app.inject({ method: 'DELETE', url: '/admin/sessions/nope', headers: auth })).statusCode, 404)
  t.match(ofType('admin_action'), [
    { action: 'list_sessions', via: 'api', target: 'alice', outcome: 'ok' },
    { action: 'revoke_user', via: 'api', target: 'alice', outcome: 'error', code: 'admin_unauthorized' },
    { action: 'revoke_user', via: 'api', target: 'alice', outcome: 'ok' },
    { action: 'revoke_session', via: 'api', target: 'nope', outcome: 'error', code: 'session_not_found' },
  ])
  t.match(ofType('user_revoked').at(-1), { reason: 'admin' })
  await t.rejects(sessionsRevoke(store, { session: 'nope' }, { clock, events }))

  // never a secret, in any line
  const all = text.join('')
  for (const secret of secrets) t.notOk(all.includes(secret), `no secret in the log (${secret.slice(0, 6)}…)`)
  t.notOk(/password_?hash|\$argon2/.test(all), 'no password hash')
  t.ok(lines().every((l) => l.msg === 'security_event' && typeof l.event === 'string'), 'every line is a security_event')

  // the counter hook: one call per event, labelled by its low-cardinality field
  t.equal(counted.length, lines().length, 'one count per line')
  t.ok(counted.includes('login_throttled:account') && counted.includes('login_failed:bad_password') && counted.includes('refresh_token_reuse:'))
  t.comment('example line: ' + JSON.stringify(ofType('refresh_token_reuse')[0]))
})

t.test('a field that looks like a secret is dropped, whatever a caller passes', async (t) => {
  const out: object[] = []
  const events = new SecurityEvents({ logger: { info: (o) => out.push(o), warn: (o) => out.push(o) } })
  // an extension event (module augmentation in real code) passing what it should not
  events.emit('admin_action', { action: 'x', via: 'cli', outcome: 'ok', ...{ refresh_token: 'rt', password: 'pw', Authorization: 'Bearer x', tokenHash: 'h', user: 'u'.repeat(1000) } } as never)
  t.match(out[0], { event: 'admin_action', redacted: ['refresh_token', 'password', 'Authorization', 'tokenHash'] })
  t.notOk(JSON.stringify(out).includes('Bearer x'))
  t.ok(((out[0] as { user: string }).user).length <= 257, 'free text is capped')
})
