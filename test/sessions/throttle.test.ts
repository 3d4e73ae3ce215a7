/**
 * The login throttle's rules, table-driven, against the store (PGlite and PostgreSQL run
 * the same SQL): every attempt is counted at admit(), before any password work; a
 * verified one gives back what it took (succeeded). The concurrency and replica cases
 * are in fix-login-throttle-counted-after-verify.test.ts.
 */
import t from 'tap'
import { throttleAddressKey } from '../../src/sessions/client-address.js'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import type { LoginThrottleSettings } from '../../src/sessions/throttle.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'

type Who = [user: string, ip?: string]
type Step =
  | { fail: Who, times?: number } // admitted, then the password is wrong
  | { ok: Who, times?: number } // admitted, then verified
  | { advanceSec: number }
  | { refused: Who, retryAfterSec: number, limit: 'account' | 'ip' | 'ip_total' }

const cases: Array<{ name: string, settings?: Partial<LoginThrottleSettings>, steps: Step[] }> = [
  {
    name: '5 failures are verified; the 6th attempt is refused for 60 s, from any address, whatever the case or width',
    steps: [{ fail: ['alice', '1.1.1.1'], times: 5 },
      { refused: ['alice', '2.2.2.2'], retryAfterSec: 60, limit: 'account' },
      { refused: ['ALICE', '2.2.2.2'], retryAfterSec: 60, limit: 'account' },
      { refused: ['\uFF21\uFF4C\uFF49\uFF43\uFF45'], retryAfterSec: 60, limit: 'account' }, // fullwidth "Alice" (NFKC)
      { fail: ['bob', '1.1.1.1'] },
      { advanceSec: 59 }, { refused: ['alice'], retryAfterSec: 1, limit: 'account' },
      { advanceSec: 1 }, { ok: ['alice'] }],
  },
  {
    name: 'backoff doubles on each further lockout: 60, 120, 240 s',
    steps: [{ fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 60, limit: 'account' }, { advanceSec: 60 },
      { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 120, limit: 'account' }, { advanceSec: 120 },
      { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 240, limit: 'account' }],
  },
  {
    name: 'backoff capped at maxLockout (3600 s)',
    steps: [60, 120, 240, 480, 960, 1920, 3600].flatMap((sec): Step[] => [
      { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: sec, limit: 'account' }, { advanceSec: sec }])
      .concat([{ fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 3600, limit: 'account' }]),
  },
  {
    name: 'a quiet window after the lock resets the streak',
    steps: [{ fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 60, limit: 'account' }, { advanceSec: 60 + 900 },
      { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 60, limit: 'account' }],
  },
  {
    name: 'failures spread beyond the window do not lock',
    steps: [{ fail: ['alice'], times: 4 }, { advanceSec: 901 }, { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 60, limit: 'account' }],
  },
  {
    name: 'a verified login restarts the account counter',
    steps: [{ fail: ['alice'], times: 4 }, { ok: ['alice'] }, { fail: ['alice'], times: 5 }, { refused: ['alice'], retryAfterSec: 60, limit: 'account' }],
  },
  {
    name: '50 failures from one address lock the address across accounts',
    steps: [...Array.from({ length: 50 }, (_, i): Step => ({ fail: [`user${i}`, '6.6.6.6'] })),
      { refused: ['fresh', '6.6.6.6'], retryAfterSec: 60, limit: 'ip' },
      { ok: ['fresh', '7.7.7.7'] }],
  },
  {
    name: 'a refused attempt counts nowhere: a locked address cannot lock the accounts it sprays',
    settings: { perIp: 3, perAccount: 2 },
    steps: [{ fail: ['a1', '6.6.6.6'] }, { fail: ['a2', '6.6.6.6'] }, { fail: ['a3', '6.6.6.6'] },
      ...Array.from({ length: 10 }, (): Step => ({ refused: ['victim', '6.6.6.6'], retryAfterSec: 60, limit: 'ip' })),
      // had the 10 refused attempts counted, the account would be locked already
      { fail: ['victim', '7.7.7.7'], times: 2 }, { refused: ['victim', '7.7.7.8'], retryAfterSec: 60, limit: 'account' }],
  },
  {
    name: 'perIpTotal counts successful logins too (credential stuffing with correct passwords)',
    settings: { perIpTotal: 10 },
    steps: [...Array.from({ length: 10 }, (_, i): Step => ({ ok: [`stuffed${i}`, '8.8.8.8'] })),
      { refused: ['stuffed10', '8.8.8.8'], retryAfterSec: 60, limit: 'ip_total' },
      { ok: ['stuffed10', '8.8.4.4'] }],
  },
  {
    name: 'successes do not count as failures of the address',
    settings: { perIp: 3 },
    steps: [...Array.from({ length: 10 }, (_, i): Step => ({ ok: [`u${i}`, '9.9.9.9'] })), { fail: ['x', '9.9.9.9'], times: 3 },
      { refused: ['y', '9.9.9.9'], retryAfterSec: 60, limit: 'ip' }],
  },
  {
    name: 'IPv6 is counted per /64; an IPv4-mapped address counts as its IPv4',
    settings: { perIp: 3 },
    steps: [{ fail: ['v1', '2001:db8:1:2::1'] }, { fail: ['v2', '2001:db8:1:2:ffff:ffff:ffff:ffff'] }, { fail: ['v3', '2001:0db8:0001:0002::99'] },
      { refused: ['v4', '2001:db8:1:2::abcd'], retryAfterSec: 60, limit: 'ip' },
      { ok: ['v5', '2001:db8:1:3::1'] },
      { fail: ['m1', '10.0.0.1'] }, { fail: ['m2', '::ffff:10.0.0.1'] }, { fail: ['m3', '::ffff:a00:1'] },
      { refused: ['m4', '10.0.0.1'], retryAfterSec: 60, limit: 'ip' }],
  },
]

t.test('keys are bounded and aggregated', async (t) => {
  const huge = '\uFDFA'.repeat(256)
  t.equal(huge.normalize('NFKC').length, 4608, 'the input the issue measured')
  t.equal(LoginThrottle.accountKey(huge).length, 43, 'a fixed-size key (sha-256)')
  t.equal(LoginThrottle.accountKey('Alice'), LoginThrottle.accountKey('\uFF41\uFF4C\uFF49\uFF43\uFF45'), 'NFKC + lower case')
  const rows: Array<[string | undefined, string | undefined]> = [
    [undefined, undefined], ['', undefined],
    ['203.0.113.7', '203.0.113.7'],
    ['::ffff:203.0.113.7', '203.0.113.7'], ['::ffff:cb00:7107', '203.0.113.7'], ['0:0:0:0:0:ffff:203.0.113.7', '203.0.113.7'],
    ['2001:db8::1', '2001:db8:0:0::/64'], ['2001:DB8:0:0:1:2:3:4', '2001:db8:0:0::/64'], ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['::1', '0:0:0:0::/64'], ['64:ff9b::192.0.2.1', '64:ff9b:0:0::/64'],
  ]
  for (const [input, want] of rows) t.equal(throttleAddressKey(input), want, String(input))
  const junk = throttleAddressKey('x'.repeat(10_000))
  t.match(junk, /^h:[A-Za-z0-9_-]{43}$/, 'a value that is not an address is hashed to a fixed size')
})

const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

for (const backend of ['embedded', 'postgres'] as const) {
  t.test(backend, { skip: b.names.includes(backend) ? false : b.skipped }, async (t) => {
    const store = await b.open(backend, t)
    for (const c of cases) {
      t.test(c.name, async (t) => {
        // one store for every case: start from an empty table
        await store.pruneThrottle(new Date(Date.UTC(9999, 0, 1)), 0)
        const who = ([user, ip]: Who): [string, string | undefined] => [user, ip]
        const clock = makeClock()
        // no prune of its own: a prune in flight from one case (with its clock) must not
        // reach into the next one's rows
        const th = new LoginThrottle({ store, clock, settings: c.settings, pruneIntervalMs: Infinity })
        for (const step of c.steps) {
          if ('advanceSec' in step) {
            clock.advanceSec(step.advanceSec)
          } else if ('refused' in step) {
            const got = await th.admit(...who(step.refused))
            t.match(got, { allowed: false, retryAfterSec: step.retryAfterSec, limit: step.limit }, `${step.refused.join('@')} refused`)
          } else {
            const target = 'fail' in step ? step.fail : step.ok
            for (let i = 0; i < (step.times ?? 1); i++) {
              const got = await th.admit(...who(target))
              t.equal(got.allowed, true, `${target.join('@')} admitted (${i + 1})`)
              if (got.allowed && 'ok' in step) await th.succeeded(got.ticket)
            }
          }
        }
      })
    }

    t.test('the table is bounded: rows that hold nothing are pruned, then the oldest beyond maxEntries (locks last)', async (t) => {
      const clock = makeClock(Date.UTC(2031, 0, 1))
      const th = new LoginThrottle({ store, clock, settings: { maxEntries: 20, perAccount: 2 } })
      await th.prune() // rows of the cases above
      await th.admit('victim', undefined)
      await th.admit('victim', undefined)
      t.match(await th.admit('victim', undefined), { allowed: false, limit: 'account' }, 'victim locked')
      for (let i = 0; i < 100; i++) await th.admit(`spray${i}`, `10.9.${i >> 8}.${i & 255}`)
      // a prune also runs by itself every maxEntries / 10 attempts; one more after the
      // spray, once any in flight has finished, leaves exactly the bound
      await th.prune()
      await th.prune()
      t.equal(await store.countThrottleRows(), 20, 'at most maxEntries after a prune')
      t.match(await th.admit('victim', undefined), { allowed: false, limit: 'account' }, 'the locked account survived the churn')
      clock.advanceSec(3600 + 900 + 60)
      await th.prune()
      t.equal(await store.countThrottleRows(), 0, 'everything is forgotten once windows, locks and streaks are over')
    })

    // fix-throttle-eviction-resets-count: beyond maxEntries the oldest rows went, so a spray
    // of fresh keys evicted the count of an account part-way to its lock and the guesser
    // started again from zero
    t.test('a spray of fresh keys does not evict the count of an account part-way to its lock', async (t) => {
      const clock = makeClock(Date.UTC(2032, 0, 1))
      const th = new LoginThrottle({ store, clock, settings: { maxEntries: 20, perAccount: 5 }, pruneIntervalMs: Infinity })
      await th.prune()
      for (let i = 0; i < 4; i++) t.equal((await th.admit('target', undefined)).allowed, true, `guess ${i + 1} of 5`)
      clock.advanceSec(1) // the spray's rows are newer than the target's
      for (let i = 0; i < 100; i++) await th.admit(`spray${i}`, `10.8.${i >> 8}.${i & 255}`)
      await th.prune() // (one may be in flight from the attempts' own count)
      await th.prune()
      t.equal(await store.countThrottleRows(), 20, 'at most maxEntries after a prune')
      t.equal((await th.admit('target', undefined)).allowed, true, 'guess 5 of 5')
      t.match(await th.admit('target', undefined), { allowed: false, limit: 'account' }, 'the sixth guess is refused: the count survived the spray')
      clock.advanceSec(3600 + 900 + 60)
      await th.prune()
    })
  })
}
