import { test } from 'tap'
import { keepWarming, WARM_LIMIT_MS } from '../../bench/lib/configs.js'

// The runner's warm-up goes on until the token pool has been sent twice and is all in the verify
// cache. It was bounded by a count of rounds: on a busy machine (2026-12-01, bare at 2–8× its
// usual µs/req) `--smoke`'s seven 1-second rounds sent ~16,000 requests and left ~6,000 of
// 10,000 tokens cached, and every smoke run failed "not warm". Now it is bounded by time.
const base = { cycled: 10_000, connections: 50 }

test('keeps warming while the pool is not sent twice or not all cached, however many rounds ran', async (t) => {
  // the smoke failure's figures: 16,270 requests and 6,450 cached after seven rounds (~8 s)
  t.equal(keepWarming({ ...base, requests: 16_270, cached: 6_450, elapsedMs: 8_000 }), true)
  t.equal(keepWarming({ ...base, requests: 20_049, cached: 10_000, elapsedMs: 1_000 }), true, 'short of two passes')
  t.equal(keepWarming({ ...base, requests: 30_000, cached: 9_999, elapsedMs: 1_000 }), true, 'one token not cached')
})

test('stops once warm, or at the time limit', async (t) => {
  t.equal(keepWarming({ ...base, requests: 20_050, cached: 10_000, elapsedMs: 1_000 }), false)
  t.equal(keepWarming({ ...base, requests: 20_050, cached: undefined, elapsedMs: 1_000 }), false, 'no admin port to ask (nginx, Envoy)')
  t.equal(keepWarming({ ...base, requests: 16_270, cached: 6_450, elapsedMs: WARM_LIMIT_MS }), false, 'the limit ends it; the runner then reports "not warm"')
})
