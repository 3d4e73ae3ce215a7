import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { getWith, idpIssuer, waitFor } from '../upstream/helpers.js'

// Identity in when the identity provider is away. oauth2-proxy crash-loops when its IdP is
// unreachable at start (oauth2-proxy#3487); Tyk answers 403 for minutes after a rotation
// (TykTechnologies/tyk#6378). Here: the gateway starts, serves its own tokens, refuses the
// IdP's with a reason until keys arrive — then accepts them without a restart; an IdP that
// goes down later leaves the last good keys working (stale-if-error), for a bounded time.

const key = makeKey('EdDSA')

async function readiness (adminUrl: string): Promise<{ status: number, body: Record<string, any> }> {
  const res = await fetch(`${adminUrl}/readyz`)
  return { status: res.status, body: await res.json() as Record<string, any> }
}

async function metrics (adminUrl: string): Promise<string> {
  return await (await fetch(`${adminUrl}/metrics`)).text()
}

/** the issuers check of /readyz (src/health.ts): its state, reason and per-issuer detail */
function issuersCheck (body: Record<string, any>): { state: string, reason?: string, detail: Record<string, any> } {
  return (body.checks as Array<{ name: string, state: string, reason?: string, detail: Record<string, any> }>).find(c => c.name === 'issuers')!
}

t.test('IdP down at start: the gateway starts, its own tokens work, IdP tokens get 401 until the IdP comes up', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const idpToken = await idp.issueToken()
  await idp.stop()

  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]),
    issuers: [idpIssuer(idp)],
  })
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'failed'), 'the first fetch failed')

  t.equal((await getWith(gw.url, '/api/x', signWith(key, goodClaims()))).status, 200, 'our own tokens work')
  const refused = await getWith(gw.url, '/api/x', idpToken)
  t.equal(refused.status, 401)
  t.equal(refused.json().code, 'token_keys_unavailable')
  t.match(refused.headers['www-authenticate'], /error="invalid_token", error_description="[^"]*not available yet/)

  const ready = await readiness(gw.adminUrl)
  t.equal(ready.status, 200, 'still ready: an unreachable IdP must not take every replica out of the load balancer')
  t.equal(ready.body.status, 'degraded', 'readiness: degraded, not down')
  t.match(issuersCheck(ready.body), { state: 'degraded', detail: { corp: { state: 'failed', keys: 0, lastError: 'issuer_keys_network' } } }, 'readiness says which issuer and why')
  t.match(ready.body.reasons, [/corp keys failed \(issuer_keys_network\)/], 'and lists it among the reasons')
  const text = await metrics(gw.adminUrl)
  t.match(text, /portcullis_jwks_keys\{issuer="corp"\} 0/, 'metrics: no keys')
  t.match(text, /portcullis_jwks_state\{issuer="corp",state="failed"\} 1/, 'metrics: the issuer\'s keys failed')

  await idp.start()
  const startedAt = Date.now()
  t.ok(await waitFor(async () => (await getWith(gw.url, '/api/x', idpToken)).status === 200, 5_000, 100),
    'the IdP token is accepted once the IdP is back, without a restart')
  t.comment(`accepted ${Date.now() - startedAt} ms after the IdP came back`)
  t.equal(set.status.state, 'ready')
  const after = await readiness(gw.adminUrl)
  t.match(issuersCheck(after.body), { state: 'ok', detail: { corp: { state: 'ready', keys: 1 } } }, 'readiness: ready again')
  t.equal(after.body.status, 'ready')
  t.ok((idp.hits.get('/jwks') ?? 0) <= 2, `JWKS fetched ${idp.hits.get('/jwks')} time(s)`)
})

t.test('IdP down later: the last good keys keep verifying (stale-if-error), for a bounded time', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]
  const fast = { refreshInterval: '1s', maxRefreshInterval: '1s' }
  // the default bound (12h), and one of 1s to see the bound itself
  const gw = await startGateway(t, { ...baseConfig(key, routes), issuers: [idpIssuer(idp, { jwks: fast })] })
  const bounded = await startGateway(t, { ...baseConfig(key, routes), issuers: [idpIssuer(idp, { jwks: { ...fast, staleIfError: '1s' } })] })
  const set = gw.gateway.runtime.issuers[0]!.keys
  const boundedSet = bounded.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'ready' && boundedSet.status.state === 'ready'))

  const used = await idp.issueToken()
  const unseen = await idp.issueToken()
  for (let i = 0; i < 3; i++) t.equal((await getWith(gw.url, '/api/x', used)).status, 200)
  await idp.stop()

  // stale also while a refresh is running; wait for one to have failed
  t.ok(await waitFor(() => set.status.state === 'stale' && set.status.lastError !== undefined, 5_000), 'a refresh failed: the keys are stale')
  t.equal(set.status.lastError?.code, 'issuer_keys_network')
  t.equal((await getWith(gw.url, '/api/x', used)).status, 200, 'a token in the verify cache still works')
  t.equal((await getWith(gw.url, '/api/x', unseen)).status, 200, 'a token never seen before verifies with the stale keys')
  const ready = await readiness(gw.adminUrl)
  t.equal(ready.status, 200)
  t.match(issuersCheck(ready.body), { state: 'degraded', detail: { corp: { state: 'stale', keys: 1, lastError: 'issuer_keys_network' } } }, 'readiness: stale, and why')

  t.ok(await waitFor(() => boundedSet.status.state === 'failed', 5_000), 'past staleIfError the keys are dropped')
  const dropped = await getWith(bounded.url, '/api/x', unseen)
  t.equal(dropped.status, 401, 'past the bound the IdP token is refused')
  t.equal(dropped.json().code, 'token_keys_unavailable')

  await idp.start()
  t.ok(await waitFor(() => set.status.state === 'ready' && boundedSet.status.state === 'ready', 5_000), 'fresh again once the IdP is back')
  t.equal((await getWith(bounded.url, '/api/x', unseen)).status, 200, 'and the bounded gateway accepts it again')
})
