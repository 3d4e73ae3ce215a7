import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { decodeJwt, getWith, idpIssuer, signAsIdp, waitFor, startIdpGateway } from '../upstream/helpers.js'

// Identity in, the key cache seen through the gateway: rotation is picked up within one
// request, a withdrawn key stops verifying (cached tokens included), and a discovery document
// naming another issuer is never trusted. The unknown-kid flood has a file of its own
// (issuers-flood.test.ts).

const key = makeKey('EdDSA')
const COOLDOWN_MS = 1_000
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

t.test('rotation: a new kid is accepted on its first request; a withdrawn key stops verifying, cached tokens too', async (t) => {
  const { idp, gw } = await startIdpGateway(t, key)
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.equal(idp.hits.get('/jwks'), 1)

  const first = await idp.issueToken()
  // three uses: verified twice, then served from the verify cache
  for (let i = 0; i < 3; i++) t.equal((await getWith(gw.url, '/api/x', first)).status, 200)

  await sleep(COOLDOWN_MS + 100) // the unknown-kid cooldown counts from the start fetch
  const second = await idp.rotate({ keepPrevious: true })
  const overlapToken = await idp.issueToken()
  t.equal(decodeJwt(overlapToken).header.kid, second.kid)
  const onFirstTry = await getWith(gw.url, '/api/x', overlapToken)
  t.equal(onFirstTry.status, 200, `the new kid is accepted within one request (${onFirstTry.body})`)
  t.equal(idp.hits.get('/jwks'), 2, 'by one refetch')
  t.equal((await getWith(gw.url, '/api/x', first)).status, 200, 'the previous key, still published, still verifies')

  await sleep(COOLDOWN_MS + 100)
  const third = await idp.rotate() // no overlap: the two earlier keys disappear
  const latest = await idp.issueToken()
  t.equal(decodeJwt(latest).header.kid, third.kid)
  t.equal((await getWith(gw.url, '/api/x', latest)).status, 200, 'the newest kid on its first request')
  t.equal(idp.hits.get('/jwks'), 3)
  for (const [name, token] of [['first (cached)', first], ['second', overlapToken]] as const) {
    const res = await getWith(gw.url, '/api/x', token)
    t.equal(res.status, 401, `${name}: refused once its key is withdrawn`)
    t.equal(res.json().code, 'token_unknown_key', `${name}: token_unknown_key`)
  }
  t.same([...set.status.kids], [third.kid], 'only the published key is held')
  t.equal(idp.hits.get('/jwks'), 3, 'refusing withdrawn kids fetched nothing more (cooldown)')
  t.equal(idp.hits.get('/.well-known/openid-configuration'), 1, 'discovery once')
})

t.test('rotation by the scheduled refresh alone: the withdrawn key is refused after the next refresh', async (t) => {
  const { idp, gw } = await startIdpGateway(t, key, { issuer: { jwks: { refreshInterval: '1s', maxRefreshInterval: '1s' } } })
  const old = await idp.issueToken()
  for (let i = 0; i < 3; i++) t.equal((await getWith(gw.url, '/api/x', old)).status, 200)
  await idp.rotate()
  const startedAt = Date.now()
  t.ok(await waitFor(async () => (await getWith(gw.url, '/api/x', old)).status === 401, 4_000, 100),
    'the old token is refused once a refresh no longer finds its key')
  const elapsedSec = (Date.now() - startedAt) / 1000
  const res = await getWith(gw.url, '/api/x', old)
  t.equal(res.json().code, 'token_unknown_key')
  const fetches = idp.hits.get('/jwks') ?? 0
  t.ok(fetches <= 2 + Math.ceil(elapsedSec) + 1, `JWKS fetches stay about one per refresh interval: ${fetches} in ${elapsedSec.toFixed(1)} s`)
})

t.test('discovery naming another issuer: its keys are never fetched, its tokens are refused', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  // configured with a trailing slash: the provider's document names the issuer without it
  // (OIDC Discovery 1.0 §4.3: they must be identical)
  const configured = `${idp.issuer}/`
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]),
    issuers: [idpIssuer(idp, { issuer: configured })],
  })
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'failed'))
  t.equal(set.status.lastError?.code, 'issuer_keys_discovery_issuer_mismatch')
  // a token whose iss is the configured identifier, signed with the provider's real key
  const res = await getWith(gw.url, '/api/x', signAsIdp(idp, { iss: configured }))
  t.equal(res.status, 401)
  t.equal(res.json().code, 'token_keys_unavailable')
  t.equal(idp.hits.get('/jwks'), undefined, "the mismatching provider's JWKS was never fetched")
  t.equal(upstream.requests.length, 0)
  const ready = await fetch(`${gw.adminUrl}/readyz`)
  const body = await ready.json() as Record<string, any>
  t.equal(ready.status, 200, 'an IdP problem does not take the replica out of the load balancer')
  const issuers = (body.checks as Array<{ name: string, detail: Record<string, any> }>).find(c => c.name === 'issuers')
  t.equal(issuers?.detail.corp?.state, 'failed', 'readiness names the issuer and its state')
  t.equal(issuers?.detail.corp?.lastError, 'issuer_keys_discovery_issuer_mismatch', 'and why')
})
