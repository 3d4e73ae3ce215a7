/**
 * The token lifecycle against BOTH stores: a real PostgreSQL and embedded PGlite run
 * the same test body. Time is injected, never slept.
 */
import t from 'tap'
import { verify as argonVerify } from '@node-rs/argon2'
import {
  InvalidCredentialsError, InvalidGrantError, InvalidUserInputError, LoginThrottledError, PasswordLengthError,
  SessionNotFoundError, UserExistsError, UserNotFoundError,
} from '../../src/sessions/errors.js'
import { DUMMY_HASH } from '../../src/sessions/passwords.js'
import { hashRefreshToken } from '../../src/sessions/refresh-tokens.js'
import { REVOCATION_TIMING } from '../../src/sessions/revoke.js'
import { SessionService } from '../../src/sessions/service.js'
import type { SessionServiceOptions } from '../../src/sessions/service.js'
import type { Store } from '../../src/sessions/store.js'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import { addUser, setClaims, setDisabled, setPassword, setScopes } from '../../src/sessions/users.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import type { TestClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'
import type { TestSigner } from '../fixtures/sessions-signer.js'

const ACCESS_TTL_SEC = 600
const TIMING = { tokenLifetimeSec: ACCESS_TTL_SEC, clockSkewSec: 30 }

const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

interface Ctx {
  store: Store
  clock: TestClock
  signer: TestSigner
  service: (options?: Partial<SessionServiceOptions>, throttle?: LoginThrottle) => SessionService
}

function ctxFor (store: Store): Ctx {
  const clock = makeClock()
  const signer = makeTestSigner(clock, ACCESS_TTL_SEC)
  return {
    store,
    clock,
    signer,
    service: (options, throttle) => new SessionService({
      store, clock, signAccessToken: signer.sign, options: { accessTokenTtlSec: ACCESS_TTL_SEC, ...options }, throttle,
    }),
  }
}

const client = { ip: '203.0.113.7', userAgent: 'tap/21' }

for (const name of ['postgres', 'embedded'] as const) {
  t.test(name, { skip: b.names.includes(name) ? false : b.skipped }, async (t) => {
    const store = await b.open(name, t)
    t.equal(store.kind, name)
    const c = ctxFor(store)
    await addUser(store, { name: 'alice', password: 'correct horse', scopes: ['orders:read'], claims: { roles: ['user'], tenant: 't1' } }, c.clock())

    t.test('migrations are idempotent', async (t) => {
      t.same(await store.migrate(), [], 'second run applies nothing')
      const [a1, a2] = await Promise.all([store.migrate(), store.migrate()])
      t.same([...a1, ...a2], [])
    })

    t.test('users', async (t) => {
      const u = await addUser(store, { name: 'bob', password: 'pw-bob', scopes: ['a', 'b', 'a'], claims: { tenant: 't2' } }, c.clock())
      t.same(u.scopes, ['a', 'b'], 'scopes deduplicated')
      t.same(u.claims, { tenant: 't2' })
      t.equal(u.disabled, false)
      t.match(u.passwordHash, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
      t.ok(u.createdAt instanceof Date)
      await t.rejects(addUser(store, { name: 'bob', password: 'x' }, c.clock()), UserExistsError)
      await t.rejects(addUser(store, { name: 'bad name', password: 'x' }, c.clock()), InvalidUserInputError)
      await t.rejects(addUser(store, { name: 'carol', password: 'x', scopes: ['has space'] }, c.clock()), InvalidUserInputError)
      await t.rejects(addUser(store, { name: 'carol', password: 'x', claims: { sub: 'admin' } }, c.clock()), { code: 'invalid_user_input', path: 'claims/sub' })
      await t.rejects(addUser(store, { name: 'carol', password: 'x', claims: { note: 'a\r\nb' } }, c.clock()), { code: 'invalid_user_input', path: 'claims/note' })
      await t.rejects(addUser(store, { name: 'carol', password: '' }, c.clock()), PasswordLengthError)
      const names = (await store.listUsers()).map((x) => x.name)
      t.same(names, ['alice', 'bob'])
      t.equal((await store.findUserByName('bob'))?.id, u.id)
      t.equal(await store.findUserByName('nobody'), undefined)
      c.clock.advanceSec(5)
      const u2 = await setScopes(store, 'bob', ['c'], c.clock())
      t.same(u2.scopes, ['c'])
      t.ok(u2.updatedAt.getTime() > u.updatedAt.getTime(), 'updated_at moves')
      t.same((await setClaims(store, 'bob', { roles: ['admin'] }, c.clock())).claims, { roles: ['admin'] })
      t.equal((await setDisabled(store, 'bob', true, c.clock(), TIMING)).disabled, true)
      t.equal((await setDisabled(store, 'bob', false, c.clock(), TIMING)).disabled, false)
      await t.rejects(setScopes(store, 'nobody', [], c.clock()), UserNotFoundError)
    })

    t.test('login success issues a verifiable pair and records the session', async (t) => {
      const svc = c.service()
      const pair = await svc.login('alice', 'correct horse', client)
      t.match(pair.refreshToken, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/, '<sid>.<secret+tag>')
      t.ok(pair.refreshToken.startsWith(`${pair.sid}.`))
      t.equal(pair.tokenType, 'Bearer')
      t.equal(pair.expiresIn, ACCESS_TTL_SEC)
      const claims = c.signer.verify(pair.accessToken)
      const alice = await store.findUserByName('alice')
      t.equal(claims.sub, alice?.id)
      t.equal(claims.sid, pair.sid)
      t.equal(claims.scope, 'orders:read')
      t.equal(claims.tenant, 't1')
      t.same(claims.roles, ['user'])
      t.equal(claims.preferred_username, 'alice')
      t.equal(pair.refreshExpiresAt.getTime(), c.clock() + 14 * 86400_000, 'refresh TTL 14 d by default')
      const state = await store.getSessionRefresh(pair.sid)
      t.equal(state?.hash, hashRefreshToken(pair.refreshToken), 'stored by hash, on the session row')
      t.notOk(JSON.stringify(state).includes(pair.refreshToken.slice(23)), 'never stored in clear')
      t.equal(await store.getRefreshToken(hashRefreshToken(pair.refreshToken)), undefined, 'no refresh_tokens row any more')
      const sessions = await svc.listSessions('alice')
      const s = sessions.find((x) => x.sid === pair.sid)
      t.match(s, { ip: '203.0.113.7', userAgent: 'tap/21', active: true, revokedAt: null })
      t.equal(s?.expiresAt.getTime(), c.clock() + 30 * 86400_000, 'session max age 30 d by default')
      await t.rejects(svc.listSessions('nobody'), UserNotFoundError)
    })

    t.test('login failures are one error, and an unknown user costs an argon2 verify', async (t) => {
      await addUser(store, { name: 'dave', password: 'pw-dave', disabled: true }, c.clock())
      const svc = c.service()
      // baseline: what one argon2 verify costs on this machine right now
      let verifyMs = Infinity
      for (let i = 0; i < 3; i++) {
        const t0 = performance.now()
        await argonVerify(DUMMY_HASH, 'x')
        verifyMs = Math.min(verifyMs, performance.now() - t0)
      }
      const timeOf = async (user: string, pw: string): Promise<number> => {
        const t0 = performance.now()
        await t.rejects(svc.login(user, pw), InvalidCredentialsError, `${user}/${pw}`)
        return performance.now() - t0
      }
      const unknown = await timeOf('nobody', 'whatever')
      const wrong = await timeOf('alice', 'wrong')
      const disabled = await timeOf('dave', 'pw-dave')
      t.comment(`argon2 verify ${verifyMs.toFixed(1)} ms; unknown ${unknown.toFixed(1)} ms, wrong ${wrong.toFixed(1)} ms, disabled ${disabled.toFixed(1)} ms`)
      // without the dummy-hash path an unknown user would answer in ~1 ms
      t.ok(unknown >= verifyMs * 0.6, 'unknown user pays an argon2 verify')
      t.ok(wrong >= verifyMs * 0.6)
      t.ok(disabled >= verifyMs * 0.6, 'disabled user pays an argon2 verify')
      await t.rejects(svc.login('alice', 'x'.repeat(1025)), { code: 'password_too_long', statusCode: 413 })
      await t.rejects(svc.login('alice', ''), { code: 'password_empty', statusCode: 400 })
      const t0 = performance.now()
      await t.rejects(svc.login('alice', 'x'.repeat(100_000)), PasswordLengthError)
      t.ok(performance.now() - t0 < verifyMs * 0.6, 'an oversized password is refused before hashing')
    })

    t.test('refresh rotates: old spent, new pair works', async (t) => {
      const svc = c.service()
      const p1 = await svc.login('alice', 'correct horse', client)
      c.clock.advanceSec(60)
      const p2 = await svc.refresh(p1.refreshToken, { ip: '198.51.100.1', userAgent: 'tap/22' })
      t.not(p2.refreshToken, p1.refreshToken)
      t.not(p2.accessToken, p1.accessToken)
      t.equal(p2.sid, p1.sid, 'same session')
      const claims = c.signer.verify(p2.accessToken)
      t.equal(claims.sid, p1.sid)
      const state = await store.getSessionRefresh(p1.sid)
      t.equal(state?.prevHash, hashRefreshToken(p1.refreshToken), 'presented token is the previous one')
      t.equal(state?.hash, hashRefreshToken(p2.refreshToken), 'its successor is current')
      t.notOk(state?.prevSealed?.includes(p2.refreshToken), 'successor not stored in clear')
      const s = (await svc.listSessions('alice')).find((x) => x.sid === p1.sid)
      t.equal(s?.lastUsedAt.getTime(), c.clock(), 'last used moves')
      t.equal(s?.ip, '198.51.100.1')
      c.clock.advanceSec(60)
      const p3 = await svc.refresh(p2.refreshToken)
      t.equal(p3.sid, p1.sid)
      await t.rejects(svc.refresh('not-a-token'), { code: 'invalid_grant', reason: 'malformed' })
      await t.rejects(svc.refresh('A'.repeat(43)), { code: 'invalid_grant', reason: 'unknown_token' })
      await t.rejects(svc.refresh(`${'A'.repeat(22)}.${'B'.repeat(64)}`), { code: 'invalid_grant', reason: 'unknown_token' }, 'unknown session')
      await t.rejects(svc.refresh(`${p1.sid}.${'B'.repeat(64)}`), { code: 'invalid_grant', reason: 'unknown_token' }, 'a known sid with a forged secret is not reuse')
      t.ok(await svc.refresh(p3.refreshToken), 'and leaves the session alone')
    })

    t.test('reuse within the grace window returns the same successor', async (t) => {
      const svc = c.service({ reuseGraceSec: 10 })
      const p1 = await svc.login('alice', 'correct horse', client)
      const p2 = await svc.refresh(p1.refreshToken)
      c.clock.advanceSec(9)
      const again = await svc.refresh(p1.refreshToken)
      t.equal(again.refreshToken, p2.refreshToken, 'same successor refresh token')
      t.not(again.accessToken, p2.accessToken, 'fresh access token')
      t.equal(again.refreshExpiresAt.getTime(), p2.refreshExpiresAt.getTime())
      // the successor is still the one live token
      const p3 = await svc.refresh(p2.refreshToken)
      t.ok(p3.refreshToken)
      // once the successor moved on, the grace path refuses without revoking the family
      c.clock.advanceSec(1)
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'successor_already_used' })
      const p4 = await svc.refresh(p3.refreshToken)
      t.ok(p4, 'family still alive')
    })

    t.test('reuse after the grace window revokes the whole family', async (t) => {
      const svc = c.service({ reuseGraceSec: 10 })
      const p1 = await svc.login('alice', 'correct horse', client)
      const p2 = await svc.refresh(p1.refreshToken)
      c.clock.advanceSec(11)
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'reuse_detected' })
      await t.rejects(svc.refresh(p2.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' }, 'the live successor dies too')
      const s = (await svc.listSessions('alice')).find((x) => x.sid === p1.sid)
      t.match(s, { active: false, revokeReason: 'refresh_token_reuse' })
      const rev = await store.loadRevocations(new Date(c.clock()))
      const entry = rev.find((e) => e.kind === 'session' && e.value === p1.sid)
      t.ok(entry, 'session revocation published for the access tokens')
      // sized by the limits of any configuration (1 h + 5 min), not by this service's TTL
      t.equal(entry?.expiresAtSec, Math.floor(c.clock() / 1000) + REVOCATION_TIMING.tokenLifetimeSec + REVOCATION_TIMING.clockSkewSec)
      t.equal(REVOCATION_TIMING.tokenLifetimeSec + REVOCATION_TIMING.clockSkewSec, 3900)
    })

    t.test('refresh token TTL and session max age', async (t) => {
      const svc = c.service({ refreshTokenTtlSec: 60, sessionMaxAgeSec: 100 })
      const p1 = await svc.login('alice', 'correct horse', client)
      t.equal(p1.refreshExpiresAt.getTime(), c.clock() + 60_000)
      c.clock.advanceSec(50)
      const p2 = await svc.refresh(p1.refreshToken)
      t.equal(p2.refreshExpiresAt.getTime(), c.clock() + 50_000, 'capped at the session absolute expiry')
      c.clock.advanceSec(51)
      await t.rejects(svc.refresh(p2.refreshToken), { code: 'invalid_grant', reason: 'session_expired' })

      const q1 = await svc.login('alice', 'correct horse', client)
      c.clock.advanceSec(61)
      await t.rejects(svc.refresh(q1.refreshToken), { code: 'invalid_grant', reason: 'token_expired' })
    })

    t.test('a disabled user cannot refresh', async (t) => {
      await addUser(store, { name: 'erin', password: 'pw-erin' }, c.clock())
      const svc = c.service()
      const p1 = await svc.login('erin', 'pw-erin', client)
      await store.updateUser('erin', { disabled: true }, new Date(c.clock()))
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'user_disabled' })
      await store.updateUser('erin', { disabled: false }, new Date(c.clock()))
      await setDisabled(store, 'erin', true, c.clock(), TIMING)
      await t.rejects(svc.refresh(p1.refreshToken), InvalidGrantError, 'setDisabled also revokes the sessions')
      await t.rejects(svc.login('erin', 'pw-erin'), InvalidCredentialsError)
    })

    t.test('a refreshed access token carries the current scopes and claims', async (t) => {
      await addUser(store, { name: 'frank', password: 'pw-frank', scopes: ['a'] }, c.clock())
      const svc = c.service()
      const p1 = await svc.login('frank', 'pw-frank', client)
      t.equal(c.signer.verify(p1.accessToken).scope, 'a')
      await setScopes(store, 'frank', ['a', 'b'], c.clock())
      await setClaims(store, 'frank', { tenant: 'new' }, c.clock())
      const p2 = await svc.refresh(p1.refreshToken)
      const claims = c.signer.verify(p2.accessToken)
      t.equal(claims.scope, 'a b')
      t.equal(claims.tenant, 'new')
    })

    t.test('password change logs the user out everywhere', async (t) => {
      await addUser(store, { name: 'gina', password: 'old-pw' }, c.clock())
      const svc = c.service()
      const p1 = await svc.login('gina', 'old-pw', client)
      c.clock.advanceSec(1)
      await setPassword(store, 'gina', 'new-pw', c.clock(), TIMING)
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      await t.rejects(svc.login('gina', 'old-pw'), InvalidCredentialsError)
      t.ok(await svc.login('gina', 'new-pw'))
    })

    t.test('logout revokes the family and denylists the access token', async (t) => {
      const svc = c.service()
      const p1 = await svc.login('alice', 'correct horse', client)
      const claims = c.signer.verify(p1.accessToken)
      await svc.logout(p1.refreshToken, claims)
      await t.rejects(svc.refresh(p1.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      const rev = await store.loadRevocations(new Date(c.clock()))
      t.ok(rev.find((e) => e.kind === 'jti' && e.value === claims.jti && e.expiresAtSec === (claims.exp as number) + 300), 'jti until exp + the largest skew any issuer may have')
      t.ok(rev.find((e) => e.kind === 'session' && e.value === p1.sid))
      const count = rev.length
      await svc.logout(p1.refreshToken, undefined) // repeated
      await svc.logout(undefined, undefined)
      await svc.logout('garbage', { jti: 5 })
      await svc.logout('B'.repeat(43), undefined)
      t.equal((await store.loadRevocations(new Date(c.clock()))).length, count, 'nothing more written')
      // logout with only the access token ends its session too
      const p2 = await svc.login('alice', 'correct horse', client)
      await svc.logout(undefined, c.signer.verify(p2.accessToken))
      await t.rejects(svc.refresh(p2.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      // an expired access token is not worth an entry
      const before = (await store.loadRevocations(new Date(c.clock()))).length
      await svc.revokeJti('old-jti', Math.floor(c.clock() / 1000) - 3600)
      t.equal((await store.loadRevocations(new Date(c.clock()))).length, before)
      await svc.revokeJti('live-jti', Math.floor(c.clock() / 1000) + 60)
      t.equal((await store.loadRevocations(new Date(c.clock()))).length, before + 1)
    })

    t.test('logout-all and revokeUser end every session and cut off older tokens', async (t) => {
      await addUser(store, { name: 'hank', password: 'pw-hank' }, c.clock())
      const svc = c.service()
      const a = await svc.login('hank', 'pw-hank', client)
      const bb = await svc.login('hank', 'pw-hank', { ip: '192.0.2.9', userAgent: 'phone' })
      t.equal((await svc.listSessions('hank')).filter((s) => s.active).length, 2)
      await svc.logoutAll(a.sub)
      await t.rejects(svc.refresh(a.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      await t.rejects(svc.refresh(bb.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      t.equal((await svc.listSessions('hank')).filter((s) => s.active).length, 0)
      const rev = await store.loadRevocations(new Date(c.clock()))
      const cut = rev.find((e) => e.kind === 'user' && e.value === a.sub)
      t.equal(cut?.issuedBeforeSec, Math.floor(c.clock() / 1000))
      t.ok(rev.find((e) => e.kind === 'session' && e.value === a.sid) && rev.find((e) => e.kind === 'session' && e.value === bb.sid),
        'each session has its own entry too: its tokens are refused whatever their iat')
      c.clock.advanceSec(2)
      const again = await svc.login('hank', 'pw-hank', client)
      t.ok(again, 'logging in again works')
      t.same(await svc.revokeUser(again.sub), [again.sid])
    })

    t.test('revokeSession and listSessions', async (t) => {
      const svc = c.service()
      const p = await svc.login('alice', 'correct horse', client)
      await svc.revokeSession(p.sid)
      await svc.revokeSession(p.sid) // already revoked: no error
      await t.rejects(svc.revokeSession('nope'), SessionNotFoundError)
      await t.rejects(svc.refresh(p.refreshToken), { code: 'invalid_grant', reason: 'session_revoked' })
      const s = (await svc.listSessions('alice')).find((x) => x.sid === p.sid)
      t.match(s, { active: false, revokeReason: 'admin' })
      t.ok(s?.revokedAt instanceof Date)
    })

    t.test('throttle: locked account refuses even the right password', async (t) => {
      await addUser(store, { name: 'ivan', password: 'pw-ivan' }, c.clock())
      const svc = c.service({}, new LoginThrottle({ store, clock: c.clock }))
      for (let i = 0; i < 5; i++) await t.rejects(svc.login('ivan', 'wrong', client), InvalidCredentialsError)
      await t.rejects(svc.login('ivan', 'pw-ivan', client), LoginThrottledError)
      await t.rejects(svc.login('IVAN', 'pw-ivan', client), { code: 'too_many_attempts', statusCode: 429, retryAfterSec: 60, limit: 'account' })
      c.clock.advanceSec(61)
      t.ok(await svc.login('ivan', 'pw-ivan', client))
    })

    t.test('purgeExpired keeps live rows', async (t) => {
      const svc = c.service({ refreshTokenTtlSec: 60 })
      const p = await svc.login('alice', 'correct horse', client)
      c.clock.advanceSec(3600)
      await svc.purgeExpired()
      t.ok((await svc.listSessions('alice')).find((s) => s.sid === p.sid), 'its session (30 d) outlives its expired token')
      await t.rejects(svc.refresh(p.refreshToken), { code: 'invalid_grant', reason: 'token_expired' })
      const live = await svc.login('alice', 'correct horse', client)
      await svc.purgeExpired()
      t.ok(await svc.refresh(live.refreshToken), 'a live token survives the purge')
      c.clock.advanceSec(31 * 86400)
      const later = await store.purgeExpired(new Date(c.clock()))
      t.ok(later.sessions >= 2, 'sessions past max age deleted')
      t.notOk((await svc.listSessions('alice')).find((s) => s.sid === p.sid))
    })
  })
}
