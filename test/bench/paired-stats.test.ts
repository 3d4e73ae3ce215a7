import { test } from 'tap'
import { baselineTable } from '../../bench/lib/baseline.js'
import type { RunRecord } from '../../bench/lib/configs.js'
import { bootstrapInterval, geometricMean } from '../../bench/lib/stats.js'

test('geometric mean: reciprocal ratios cancel, empty is NaN', async (t) => {
  t.equal(geometricMean([0.5, 2]), 1)
  t.equal(geometricMean([0.9]), 0.9)
  t.ok(Number.isNaN(geometricMean([])))
})

test('bootstrap interval: seeded, holds the mean, narrows with more pairs', async (t) => {
  const few = [0.82, 0.95, 1.04, 0.91, 0.88, 0.99]
  const many = Array.from({ length: 60 }, (_, i) => few[i % few.length] as number)
  const [lo, hi] = bootstrapInterval(few)
  t.same(bootstrapInterval(few), [lo, hi], 'the same pairs give the same interval')
  t.ok(lo < geometricMean(few) && geometricMean(few) < hi, `${lo} < mean < ${hi}`)
  const [lo2, hi2] = bootstrapInterval(many)
  t.ok(hi2 - lo2 < (hi - lo) / 2, `60 pairs (${lo2}–${hi2}) narrower than 6 (${lo}–${hi})`)
  t.same(bootstrapInterval([1, 1, 1]), [1, 1], 'no spread, no interval')
})

test('the paired table pools every pair into an "all together" row', async (t) => {
  const run = (id: string, rep: number, cpu: number, ok = true): RunRecord => ({ id, rep, cpuUsPerReq: cpu, rps: 1e6 / cpu, ok }) as unknown as RunRecord
  const records = [
    run('a', 0, 100), run('a@baseline', 0, 90),
    run('a', 1, 100), run('a@baseline', 1, 110),
    run('b', 0, 50), run('b@baseline', 0, 50),
    run('b', 1, 80, false), run('b@baseline', 1, 40), // a failed run pairs with nothing
  ]
  const table = baselineTable(records, 'abc1234')
  const row = (id: string): string[] => (table.split('\n').find(l => l.startsWith(`| ${id} |`)) ?? '').split('|').map(c => c.trim())
  t.equal(row('a')[2], '2', 'a: two pairs')
  t.equal(row('b')[2], '1', 'b: the failed run left out')
  t.equal(row('all together')[2], '3')
  t.match(row('all together')[4], /^0\.997 \(/, 'geometric mean of 0.9, 1.1 and 1.0')
})
