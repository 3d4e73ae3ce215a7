import t from 'tap'
import { LoginThrottle } from '../../src/sessions/throttle.js'
import { makeClock } from '../fixtures/sessions-clock.js'

type Step =
  | { fail: [string, string?] }
  | { ok: string }
  | { advanceSec: number }
  | { check: [string, string?], allowed: true }
  | { check: [string, string?], allowed: false, retryAfterSec: number, scope?: 'account' | 'ip' }

const cases: Array<{ name: string, steps: Step[] }> = [
  {
    name: '4 failures: still allowed',
    steps: [...Array(4).fill({ fail: ['alice', '1.1.1.1'] }), { check: ['alice', '1.1.1.1'], allowed: true }],
  },
  {
    name: '5th failure locks the account for 60 s, from any address',
    steps: [...Array(5).fill({ fail: ['alice', '1.1.1.1'] }),
      { check: ['alice', '2.2.2.2'], allowed: false, retryAfterSec: 60, scope: 'account' },
      { check: ['ALICE', '2.2.2.2'], allowed: false, retryAfterSec: 60 },
      { check: ['bob', '1.1.1.1'], allowed: true },
      { advanceSec: 59 }, { check: ['alice'], allowed: false, retryAfterSec: 1 },
      { advanceSec: 1 }, { check: ['alice'], allowed: true }],
  },
  {
    name: 'backoff doubles on each further lockout: 60, 120, 240 s',
    steps: [...Array(5).fill({ fail: ['alice'] }), { advanceSec: 60 },
      ...Array(5).fill({ fail: ['alice'] }), { check: ['alice'], allowed: false, retryAfterSec: 120 }, { advanceSec: 120 },
      ...Array(5).fill({ fail: ['alice'] }), { check: ['alice'], allowed: false, retryAfterSec: 240 }],
  },
  {
    name: 'backoff capped at maxLockoutSec (3600)',
    // each lock is served exactly, so no quiet window passes: 60, 120, … 1920, then 3600 (cap)
    steps: [60, 120, 240, 480, 960, 1920, 3600].map((sec) => [...Array(5).fill({ fail: ['alice'] }), { advanceSec: sec }]).flat()
      .concat([...Array(5).fill({ fail: ['alice'] }), { check: ['alice'], allowed: false, retryAfterSec: 3600 }]),
  },
  {
    name: 'a quiet window resets the streak',
    steps: [...Array(5).fill({ fail: ['alice'] }), { advanceSec: 60 + 900 },
      ...Array(5).fill({ fail: ['alice'] }), { check: ['alice'], allowed: false, retryAfterSec: 60 }],
  },
  {
    name: 'failures spread beyond the window do not lock',
    steps: [...Array(4).fill({ fail: ['alice'] }), { advanceSec: 901 }, ...Array(4).fill({ fail: ['alice'] }),
      { check: ['alice'], allowed: true }],
  },
  {
    name: 'success clears the account counter',
    steps: [...Array(4).fill({ fail: ['alice'] }), { ok: 'alice' }, ...Array(4).fill({ fail: ['alice'] }),
      { check: ['alice'], allowed: true }],
  },
  {
    name: '50 failures from one address lock the address across accounts',
    steps: [...Array.from({ length: 50 }, (_, i) => ({ fail: [`user${i}`, '6.6.6.6'] as [string, string] })),
      { check: ['fresh', '6.6.6.6'], allowed: false, retryAfterSec: 900, scope: 'ip' },
      { check: ['fresh', '7.7.7.7'], allowed: true }],
  },
]

for (const c of cases) {
  t.test(c.name, async (t) => {
    const clock = makeClock()
    const th = new LoginThrottle({ clock })
    for (const step of c.steps) {
      if ('fail' in step) th.recordFailure(step.fail[0], step.fail[1])
      else if ('ok' in step) th.recordSuccess(step.ok)
      else if ('advanceSec' in step) clock.advanceSec(step.advanceSec)
      else {
        const got = th.check(step.check[0], step.check[1])
        if (step.allowed) t.same(got, { allowed: true }, `${step.check.join('@')} allowed`)
        else t.match(got, { allowed: false, retryAfterSec: step.retryAfterSec, ...(step.scope ? { scope: step.scope } : {}) }, `${step.check.join('@')} refused`)
      }
    }
  })
}

t.test('memory is bounded: oldest entries are evicted', async (t) => {
  const clock = makeClock()
  const th = new LoginThrottle({ clock, maxEntries: 100 })
  for (let i = 0; i < 10_000; i++) th.recordFailure(`spray${i}`, `10.0.${i >> 8}.${i & 255}`)
  t.same(th.size, { accounts: 100, ips: 100 })
  // a locked account that is touched stays recent and survives the churn
  const th2 = new LoginThrottle({ clock, maxEntries: 10 })
  for (let i = 0; i < 5; i++) th2.recordFailure('victim', undefined)
  for (let i = 0; i < 9; i++) th2.recordFailure(`other${i}`, undefined)
  t.equal(th2.check('victim', undefined).allowed, false)
})
