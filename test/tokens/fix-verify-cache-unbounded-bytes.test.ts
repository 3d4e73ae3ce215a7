import t from 'tap'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { AssertionSigner } from '../../src/tokens/assertion.js'
import { buildKeySet } from '../../src/tokens/keys.js'
import type { VerifiedToken } from '../../src/tokens/verified-token.js'
import { TokenVerifier } from '../../src/tokens/verifier.js'
import { MAX_ENTRY_BYTES, VERIFY_BUDGET_BYTES_PER_TOKEN, VerifiedCache } from '../../src/tokens/verify-cache.js'
import { baseConfig, goodClaims, makeKey, signWith } from '../fixtures/gateway.js'

// Found by a review that measured the heap (fix-verify-cache-unbounded-bytes): the verify
// cache (verifyCacheSize tokens, 20,000 by default) and the assertion cache (as many) were
// bounded by count only, and an entry holds whatever the token's payload parses into. With an
// identity provider that lets a user shape a claim, 20,000 distinct valid tokens just under
// maxTokenBytes, each used twice, took the heap from 42 MB to 334 MB (one 5.8 KB string), to
// 647 MB on a route with an assertion, and to 2.5 GB with a claim of ~1,900 `{}` (125 KB
// parsed); nothing left until pushed out. Now each entry's weight is estimated when it is
// admitted: one over MAX_ENTRY_BYTES is not cached, and the caches evict their oldest entries
// to stay within a byte budget. Counted, not timed: sizes, hits, signatures.

const DEFAULT_COUNT = 20_000
const VERIFY_BUDGET_BYTES = DEFAULT_COUNT * VERIFY_BUDGET_BYTES_PER_TOKEN
// the assertion cache's share at the same count (assertion.ts: 1.5 KiB a token)
const ASSERTION_BUDGET_BYTES = DEFAULT_COUNT * 1536

const nowMs = Date.UTC(2030, 0, 1)

/**
 * A verified token as the verifier builds it, with `text` of `textChars` characters ending in
 * a per-token suffix (the verify cache's "seen before" bit hashes the last 16 characters).
 */
function verified (i: number, claims: Record<string, unknown>, textChars = 8000): VerifiedToken {
  const end = `.${i.toString(36).padStart(16, '0')}`
  return {
    issuer: 'idp',
    claims: { sub: `u${i}`, ...claims },
    sub: `u${i}`,
    jti: undefined,
    scopes: new Set(['orders:read']),
    expMs: nowMs + 600_000,
    notBeforeMs: 0,
    skewMs: 0,
    key: undefined,
    identity: [['x-user-id', `u${i}`]],
    revocationJti: undefined,
    text: 'e'.repeat(Math.max(0, textChars - end.length)) + end,
  }
}

/** a token at maxTokenBytes whose payload is one 5,800-character string (the review's `str`) */
const heavy = (i: number): VerifiedToken => verified(i, { x: 'a'.repeat(5800) })
const small = (i: number): VerifiedToken => verified(i, { name: 'Alice' }, 600)

/** used twice, as the verifier does: admitted after a verification, verified only on a miss */
function admitTwice (cache: VerifiedCache, v: VerifiedToken): void {
  for (let use = 0; use < 2; use++) if (cache.get(v.text) === undefined) cache.admit(v.text, v)
}

t.test('verify cache at the default count: heavy tokens stop at the byte budget, far below the count', async (t) => {
  const cache = new VerifiedCache(DEFAULT_COUNT)
  const admitted = 6000
  for (let i = 0; i < admitted; i++) admitTwice(cache, heavy(i))
  t.ok(cache.size < admitted, `${cache.size} of ${admitted} heavy tokens cached: the count alone allowed all of them`)
  t.ok(cache.size > 1000, `${cache.size} cached: the budget still holds thousands of them`)
  t.ok(cache.bytes <= VERIFY_BUDGET_BYTES, `${cache.bytes} estimated bytes, within ${VERIFY_BUDGET_BYTES}`)
  t.ok(cache.bytes > VERIFY_BUDGET_BYTES - MAX_ENTRY_BYTES, 'and filled up to it')
})

t.test('verify cache: an entry over MAX_ENTRY_BYTES is not cached; a normal token still is', async (t) => {
  const rows: Array<{ name: string, token: VerifiedToken, cached: boolean }> = [
    { name: 'a normal token', token: small(1), cached: true },
    { name: 'a token at maxTokenBytes with a 5,800-character claim', token: heavy(2), cached: true },
    { name: 'a claim of 1,900 empty objects (125 KB parsed from 5.7 KB)', token: verified(3, { x: Array.from({ length: 1900 }, () => ({})) }), cached: false },
    { name: 'a claim of 800 properties of its own', token: verified(4, { x: Object.fromEntries(Array.from({ length: 800 }, (_, j) => [`k${j}`, 0])) }), cached: false },
    { name: 'a scope list of 1,800 scopes', token: { ...verified(5, {}), scopes: new Set(Array.from({ length: 1800 }, (_, j) => `s${j}`)) }, cached: false },
    { name: 'a 40,000-character token', token: verified(6, {}, 40_000), cached: false },
  ]
  for (const row of rows) {
    const cache = new VerifiedCache(DEFAULT_COUNT)
    admitTwice(cache, row.token)
    t.equal(cache.get(row.token.text) === row.token, row.cached, `${row.name}: ${row.cached ? 'hits' : 'misses'} after its second verification`)
    t.equal(cache.size, row.cached ? 1 : 0, `${row.name}: size`)
  }
})

t.test('verify cache: eviction by bytes keeps insertion order, the oldest leave first', async (t) => {
  const cache = new VerifiedCache(DEFAULT_COUNT)
  const tokens: VerifiedToken[] = []
  // heavy and small tokens interleaved, past the budget and on
  for (let i = 0; i < 7000; i++) {
    const v = i % 3 === 0 ? small(i) : heavy(i)
    tokens.push(v)
    admitTwice(cache, v)
  }
  const present = tokens.map(v => cache.get(v.text) === v)
  const firstKept = present.indexOf(true)
  t.ok(firstKept > 0, `the ${firstKept} oldest tokens were evicted`)
  t.equal(present.indexOf(false, firstKept), -1, 'every token admitted after the oldest kept one is still cached')
  t.equal(cache.size, tokens.length - firstKept)
})

t.test('verify cache: each admission evicts the oldest entries, and only as many as it needs', async (t) => {
  // a ring of 10 (its budget MAX_ENTRY_BYTES): count and bytes both bind in turn
  const COUNT = 10
  const budget = Math.max(MAX_ENTRY_BYTES, COUNT * VERIFY_BUDGET_BYTES_PER_TOKEN)
  const cache = new VerifiedCache(COUNT)
  const weight = (v: VerifiedToken): number => { const one = new VerifiedCache(COUNT); admitTwice(one, v); return one.bytes }
  const kinds = [
    (i: number) => small(i),
    (i: number) => heavy(i),
    (i: number) => small(i),
    (i: number) => verified(i, { x: 'a'.repeat(2000) }, 22_000), // most of the budget alone
    (i: number) => small(i),
    (i: number) => small(i),
  ]
  const admitted: Array<{ v: VerifiedToken, bytes: number }> = []
  let wrong = 0
  for (let i = 0; i < 300; i++) {
    const v = (kinds[i % kinds.length] as (i: number) => VerifiedToken)(i)
    admitted.push({ v, bytes: weight(v) })
    admitTwice(cache, v)
    const present = admitted.map(e => cache.get(e.v.text) === e.v)
    const firstKept = present.indexOf(true)
    const kept = admitted.slice(firstKept)
    const keptBytes = kept.reduce((n, e) => n + e.bytes, 0)
    const before = admitted[firstKept - 1]
    const ok = present.indexOf(false, firstKept) === -1 && // a suffix of the admissions: oldest out first
      cache.size === kept.length && cache.bytes === keptBytes && keptBytes <= budget && cache.size <= COUNT &&
      // the next older one could not have stayed
      (before === undefined || kept.length === COUNT || keptBytes + before.bytes > budget)
    if (!ok) wrong++
  }
  t.equal(wrong, 0, 'after every one of 300 admissions the cache holds the newest entries that fit, no fewer')
  t.ok(admitted.some(e => e.bytes > budget / 2), 'some entries took more than half the budget')
})

t.test('verify cache: the count still decides for typical tokens; a full ring evicts one per admission', async (t) => {
  const cache = new VerifiedCache(100)
  for (let i = 0; i < 150; i++) admitTwice(cache, small(i))
  t.equal(cache.size, 100, 'verifyCacheSize small tokens are cached')
  t.equal(cache.get(small(49).text), undefined, 'the 50 oldest left')
  t.ok(cache.get(small(50).text) !== undefined, 'the 100 newest stay')
  t.ok(cache.bytes <= 100 * VERIFY_BUDGET_BYTES_PER_TOKEN, `${cache.bytes} estimated bytes`)
})

t.test('TokenVerifier: a token that parses into many small objects is verified on each use, not cached', async (t) => {
  const key = makeKey('EdDSA')
  const config = loadConfigText(stringify(baseConfig(key, [{ name: 'r', prefix: '/r', upstream: 'http://127.0.0.1:1', auth: 'required' }])), { env: {} })
  t.equal(config.tokens.verifyCacheSize, DEFAULT_COUNT)
  const verifier = TokenVerifier.selfOnly(buildKeySet(config.tokens.algorithm, config.tokens.keys), config)
  const iat = Math.floor(nowMs / 1000)
  const objects = signWith(key, goodClaims({ sub: 'mallory', x: Array.from({ length: 1900 }, () => ({})) }, iat))
  t.ok(objects.length <= config.tokens.maxTokenBytes, `${objects.length} characters: within maxTokenBytes`)
  for (let i = 0; i < 3; i++) verifier.verify(objects, nowMs)
  t.same(verifier.counts, { hits: 0, misses: 3, failures: 0 }, 'verified three times')
  t.equal(verifier.cacheSize, 0)
  const normal = signWith(key, goodClaims({ sub: 'alice' }, iat))
  for (let i = 0; i < 3; i++) verifier.verify(normal, nowMs)
  t.same(verifier.counts, { hits: 1, misses: 5, failures: 0 }, 'a normal token hits on its third use')
})

t.test('assertion cache', async (t) => {
  const key = makeKey('EdDSA')
  const keys = buildKeySet('EdDSA', [{ kid: key.kid, privateKeyPem: key.privatePem }] as never)
  const ORDERS = 'https://orders.internal'
  const BILLING = 'https://billing.internal'
  // the runtime's limits at the default verifyCacheSize; maxBytes past the claims, so nothing is left out
  const signerOf = (): AssertionSigner => new AssertionSigner(keys, 'https://gw.test', 300, () => nowMs, { maxBytes: 60_000, maxTokens: DEFAULT_COUNT })
  const heavyClaims = (i: number): VerifiedToken => verified(i, { x: 'a'.repeat(5000) })

  t.test('at the default count: heavy entries stop at the byte budget; the oldest leave first', async (t) => {
    const signer = signerOf()
    const tokens: VerifiedToken[] = []
    for (let i = 0; i < 3000; i++) {
      const v = heavyClaims(i)
      tokens.push(v)
      signer.assertion(v, ORDERS)
    }
    t.equal(signer.signatures, 3000)
    t.ok(signer.size < 3000, `${signer.size} of 3000 tokens keep their assertion: the count alone allowed all`)
    t.ok(signer.size > 1000, 'the budget still holds more than a thousand')
    t.ok(signer.bytes <= ASSERTION_BUDGET_BYTES, `${signer.bytes} estimated bytes, within ${ASSERTION_BUDGET_BYTES}`)
    signer.assertion(tokens.at(-1)!, ORDERS)
    t.equal(signer.signatures, 3000, 'the newest is reused')
    signer.assertion(tokens[0]!, ORDERS)
    t.equal(signer.signatures, 3001, 'the oldest was evicted: signed again')
  })

  t.test('an entry over MAX_ENTRY_BYTES is not kept; a normal one is', async (t) => {
    const rows: Array<{ name: string, token: VerifiedToken, audiences: string[], signatures: number }> = [
      { name: 'a normal token', token: small(1), audiences: [ORDERS, ORDERS], signatures: 1 },
      { name: 'a 40,000-character token', token: verified(2, {}, 40_000), audiences: [ORDERS, ORDERS], signatures: 2 },
      // 20,000 characters and one assertion of ~8 KB fit; a second assertion does not, and
      // is signed each time while the first is still reused
      { name: 'a second audience past the cap', token: verified(3, { x: 'a'.repeat(6000) }, 20_000), audiences: [ORDERS, BILLING, ORDERS, BILLING], signatures: 3 },
    ]
    for (const row of rows) {
      const signer = signerOf()
      for (const audience of row.audiences) signer.assertion(row.token, audience)
      t.equal(signer.signatures, row.signatures, `${row.name}: ${row.signatures} signatures for ${row.audiences.length} assertions`)
      t.ok(signer.bytes <= MAX_ENTRY_BYTES, `${row.name}: ${signer.bytes} estimated bytes`)
    }
  })

  t.test('a renewal replaces the stale assertion in the byte total, it does not add to it', async (t) => {
    const clock = { nowMs }
    const signer = new AssertionSigner(keys, 'https://gw.test', 300, () => clock.nowMs, { maxTokens: DEFAULT_COUNT })
    const v = small(1)
    signer.assertion(v, ORDERS)
    signer.assertion(v, BILLING)
    const bytes = signer.bytes
    clock.nowMs += 250_000 // past 80 % of the lifetime
    signer.assertion(v, ORDERS)
    signer.assertion(v, BILLING)
    t.equal(signer.signatures, 4, 'both renewed')
    t.equal(signer.bytes, bytes, `${bytes} estimated bytes before and after`)
    t.equal(signer.size, 1)
  })
})
