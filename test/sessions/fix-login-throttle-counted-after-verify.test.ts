/**
 * Regression (issue 9 item 1): the throttle checked before argon2 but recorded the
 * failure after it, in each replica's memory — 30 concurrent wrong passwords for one
 * account gave 30 × 401 and 0 × 429 (limit 5), and N replicas allowed N × the guesses.
 * Now the attempt is counted in the store, under a row lock, before verifying: at most
 * `perAccount` attempts reach argon2 (answered 401), every other one is 429 with a
 * Retry-After — on one replica and on two (two pools, two services, one database).
 */
import t from 'tap'
import { InvalidCredentialsError, LoginThrottledError } from '../../src/sessions/errors.js'
import { SessionService } from '../../src/sessions/service.js'
import type { Store } from '../../src/sessions/store.js'
import { openStore } from '../../src/sessions/store.js'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import { addUser } from '../../src/sessions/users.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const ATTEMPTS = 30
const PER_ACCOUNT = 5

const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

interface Tally { unauthorized: number, throttled: number, other: unknown[], retryAfter: number[] }

async function storm (services: SessionService[], user: string, ip: (i: number) => string): Promise<Tally> {
  const results = await Promise.allSettled(Array.from({ length: ATTEMPTS }, async (_, i) =>
    await services[i % services.length]!.login(user, `wrong-${i}`, { ip: ip(i) })))
  const tally: Tally = { unauthorized: 0, throttled: 0, other: [], retryAfter: [] }
  for (const r of results) {
    if (r.status === 'fulfilled') tally.other.push('a wrong password logged in')
    else if (r.reason instanceof InvalidCredentialsError) tally.unauthorized++
    else if (r.reason instanceof LoginThrottledError) {
      tally.throttled++
      tally.retryAfter.push(r.reason.retryAfterSec ?? 0)
    } else tally.other.push(r.reason)
  }
  return tally
}

function serviceOn (store: Store, clock: () => number): SessionService {
  return new SessionService({
    store,
    clock,
    signAccessToken: makeTestSigner(clock).sign,
    throttle: new LoginThrottle({ store, clock, settings: { perAccount: PER_ACCOUNT } }),
  })
}

for (const backend of ['postgres', 'embedded'] as const) {
  t.test(`${backend}: ${ATTEMPTS} concurrent wrong passwords on one account`, { skip: b.names.includes(backend) ? false : b.skipped }, async (t) => {
    const store = await b.open(backend, t)
    const clock = makeClock()
    await addUser(store, { name: 'alice', password: 'right' }, clock())
    const svc = serviceOn(store, clock)
    // every attempt from its own address: only the account limit can stop them
    const tally = await storm([svc], 'alice', (i) => `198.51.100.${i + 1}`)
    t.same(tally.other, [], 'only 401 and 429')
    t.equal(tally.unauthorized, PER_ACCOUNT, `${PER_ACCOUNT} reached argon2 (401)`)
    t.equal(tally.throttled, ATTEMPTS - PER_ACCOUNT, 'the rest are 429 too_many_attempts')
    t.ok(tally.retryAfter.every((s) => s >= 1 && s <= 60), 'each 429 has a Retry-After within the lockout')
    await t.rejects(svc.login('alice', 'right', { ip: '203.0.113.1' }), { code: 'too_many_attempts', statusCode: 429 },
      'locked: even the right password is refused')
    clock.advanceSec(61)
    t.ok(await svc.login('alice', 'right', { ip: '203.0.113.1' }), 'lifted after the lockout')
  })
}

t.test('two replicas (two pools, two services) share the throttle', { skip: b.names.includes('postgres') ? false : b.skipped }, async (t) => {
  const url = await (await b.cluster()).createDatabase('throttle_replicas')
  const [storeA, storeB] = await Promise.all([openStore({ url }), openStore({ url })])
  t.teardown(async () => { await storeA.close(); await storeB.close() })
  const clock = makeClock()
  await addUser(storeA, { name: 'bob', password: 'right' }, clock())
  const replicas = [serviceOn(storeA, clock), serviceOn(storeB, clock)]
  const tally = await storm(replicas, 'bob', (i) => `2001:db8:${i}::1`)
  t.same(tally.other, [], 'only 401 and 429')
  t.equal(tally.unauthorized, PER_ACCOUNT, `${PER_ACCOUNT} guesses in all, not ${PER_ACCOUNT} per replica`)
  t.equal(tally.throttled, ATTEMPTS - PER_ACCOUNT)

  // one address spraying many accounts over both replicas: the perIp limit is shared too
  for (let i = 0; i < 12; i++) await addUser(storeA, { name: `spray${i}`, password: 'right' }, clock())
  const sprayers = [0, 1].map((i) => new SessionService({
    store: [storeA, storeB][i]!,
    clock,
    signAccessToken: makeTestSigner(clock).sign,
    throttle: new LoginThrottle({ store: [storeA, storeB][i]!, clock, settings: { perIp: 10 } }),
  }))
  const spray = await Promise.allSettled(Array.from({ length: 12 }, async (_, i) =>
    await sprayers[i % 2]!.login(`spray${i}`, 'guess', { ip: '2001:db8:aaaa:1::' + (i + 1).toString(16) })))
  const throttled = spray.filter((r) => r.status === 'rejected' && r.reason instanceof LoginThrottledError)
  t.equal(spray.length - throttled.length, 10, 'one /64 gets perIp (10) verifications across both replicas')
  t.match((throttled[0] as PromiseRejectedResult | undefined)?.reason, { limit: 'ip' })
})
