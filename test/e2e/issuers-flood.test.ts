import { randomBytes } from 'node:crypto'
import t from 'tap'
import { makeKey } from '../fixtures/gateway.js'
import { flood, idpClaims, startIdpGateway, waitFor } from '../upstream/helpers.js'

// The unknown-kid flood (Envoy took three years to refetch on an unknown kid at all,
// envoyproxy/envoy#14557; KrakenD fetched per endpoint, krakend-jose#78): 2 × 1,000 requests,
// each naming a random kid, cost at most one JWKS fetch besides the start fetch, and tokens
// with the real kid keep working throughout.

const key = makeKey('EdDSA')
// longer than one flood of 1,000 requests takes on a loaded 2-core machine (~3 s seen)
const COOLDOWN_MS = 6_000

function b64 (v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url')
}

t.test('unknown-kid flood: 2,000 requests with random kids, at most 2 JWKS fetches in all', async (t) => {
  const { idp, upstream, gw } = await startIdpGateway(t, key, { issuer: { jwks: { cooldown: `${COOLDOWN_MS}ms` } } })
  const set = gw.gateway.runtime.issuers[0]!.keys
  const good = await idp.issueToken()
  const floodOf = (n: number): string[] => Array.from({ length: n }, (_, i) => {
    // the kid is looked up before any signature check, so random bytes stand in for one;
    // every 100th request carries the good token
    if (i % 100 === 50) return good
    const header = b64({ alg: 'RS256', typ: 'at+jwt', kid: randomBytes(12).toString('base64url') })
    return `${header}.${b64(idpClaims(idp))}.${randomBytes(256).toString('base64url')}`
  })

  // 1: within the cooldown after the start fetch — refused without any fetch
  const first = await flood(gw.url, '/api/x', floodOf(1_000), 50)
  // 2: once the cooldown is over — one fetch, joined by every request in flight, then the cooldown again
  t.ok(await waitFor(() => Date.now() > (set.status.lastAttemptAt ?? 0) + COOLDOWN_MS, COOLDOWN_MS + 1_000, 50))
  const second = await flood(gw.url, '/api/x', floodOf(1_000), 50)

  for (const [name, results] of [['within the cooldown', first], ['after the cooldown', second]] as const) {
    const refused = results.filter(r => r.status === 401)
    t.equal(refused.length, 990, `${name}: every random kid refused`)
    t.ok(refused.every(r => r.code === 'token_unknown_key'), `${name}: as token_unknown_key`)
    t.equal(results.filter(r => r.status === 200).length, 10, `${name}: the good token kept working`)
  }
  const fetches = idp.hits.get('/jwks') ?? 0
  t.ok(fetches <= 2, `JWKS fetches: ${fetches} (the start fetch + at most one for 2,000 unknown kids)`)
  t.ok(set.status.unknownKidFetches <= 1, `unknown-kid fetches: ${set.status.unknownKidFetches}`)
  t.ok(set.status.unknownKidThrottled >= 1_900, `throttled by the cooldown: ${set.status.unknownKidThrottled}`)
  t.equal(upstream.requests.length, 20)
})
