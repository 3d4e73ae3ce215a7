import t, { type Test } from 'tap'
import type { ServerResponse } from 'node:http'
import { IssuerKeysErrorCode } from '../../src/tokens/issuers/errors.js'
import { KeySetState } from '../../src/tokens/issuers/remote-key-set.js'
import { REMOTE_KEY_SET_DEFAULTS } from '../../src/tokens/issuers/options.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { getWith, waitFor } from '../upstream/helpers.js'
import { FakeTime, keyPair, makeSet, options, publicJwk, startJwksServer, type JwksServer } from './issuers/helpers.js'

// Found by an adversarial review of "Identity in" (finding 5): an IdP answering its JWKS with
// `Cache-Control: no-cache` (Keycloak does), or a max-age at or under minRefreshInterval, has
// its freshness clamped up to minRefreshInterval, and the background refresh is due at
// max(minRefreshInterval, 80 % of it) — the very instant freshness ends. So every refresh ran
// while the set counted as stale: /readyz said degraded and portcullis_jwks_state flipped
// ready → stale → ready every interval, with a healthy IdP and zero failures (and with
// staleIfError 0 the keys stopped verifying while it ran). Now the set stays ready until the
// refresh due has had its whole deadline; stale means a refresh that failed or overran it.

const MIN = REMOTE_KEY_SET_DEFAULTS.minRefreshIntervalMs
const TIMEOUT = REMOTE_KEY_SET_DEFAULTS.fetchTimeoutMs
const rsa = keyPair('RSA')

/** answers the discovery document and the JWKS with `headers` (the server's default adds them to the JWKS only) */
function serveWith (server: JwksServer, headers: Record<string, string>): void {
  server.handler = (req, res) => {
    const body = req.url === '/.well-known/openid-configuration' ? server.discovery : server.jwks
    res.writeHead(200, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body))
  }
}

/** the next JWKS request is held until `answer()`: a refresh in flight, for as long as the test likes */
function holdJwks (server: JwksServer, headers: Record<string, string>): { arrived: Promise<void>, answer: (status?: number) => void } {
  let held: ServerResponse | undefined
  let arrived: () => void = () => {}
  const promise = new Promise<void>(resolve => { arrived = resolve })
  serveWith(server, headers)
  const serve = server.handler!
  server.handler = (req, res) => {
    if (req.url !== '/jwks' || held !== undefined) { serve(req, res); return }
    held = res
    arrived()
  }
  return {
    arrived: promise,
    answer: (status = 200) => {
      serveWith(server, headers)
      const res = held
      if (res === undefined || res.headersSent) return
      if (status === 200) serve({ url: '/jwks' } as Parameters<typeof serve>[0], res)
      else res.writeHead(status).end()
    },
  }
}

async function setup (t: Test, headers: Record<string, string>, overrides: Partial<Parameters<typeof options>[0]> = {}) {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'a', alg: 'RS256', use: 'sig' })] }
  server.discovery = { issuer: server.origin, jwks_uri: server.jwksUrl }
  serveWith(server, headers)
  const time = new FakeTime()
  const discovery = overrides.discovery === true
  const set = makeSet(t, options({ issuer: server.origin, jwksUri: discovery ? undefined : server.jwksUrl, clock: time.clock, timers: time.timers, ...overrides }))
  set.start()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready, 'keys fetched')
  return { server, time, set }
}

t.test('a refresh due when freshness ends keeps the set ready while it runs', async (t) => {
  const rows: Array<[string, Record<string, string>]> = [
    ['Cache-Control: no-cache (Keycloak)', { 'cache-control': 'no-cache' }],
    ['no-store', { 'cache-control': 'no-store' }],
    ['max-age=5, under minRefreshInterval', { 'cache-control': 'max-age=5' }],
    ['max-age=30, minRefreshInterval itself', { 'cache-control': 'max-age=30' }],
    ['max-age=33: 80 % is under minRefreshInterval, 3 s are left for the refresh', { 'cache-control': 'max-age=33' }],
  ]
  for (const [name, headers] of rows) {
    await t.test(name, async (t) => {
      const { server, time, set } = await setup(t, headers)
      const refreshAt = set.status.nextRefreshAt!
      t.equal(refreshAt - set.status.lastSuccessAt!, MIN, 'the refresh is due after minRefreshInterval')
      const hold = holdJwks(server, headers)
      time.advance(refreshAt - time.now)
      await hold.arrived
      t.equal(set.status.state, KeySetState.ready, 'ready as the refresh starts')
      time.advance(1_000) // a slow but healthy IdP
      t.equal(set.status.state, KeySetState.ready, 'still ready while it runs (was stale)')
      time.advance(refreshAt + TIMEOUT - time.now)
      t.equal(set.status.state, KeySetState.ready, 'up to the end of its deadline')
      hold.answer()
      await set.whenSettled()
      t.equal(set.status.state, KeySetState.ready)
      t.equal(set.status.fetches, 2)
      t.equal(set.status.failures, 0)
      t.equal(server.hits('/jwks'), 2)
    })
  }
})

t.test('stale still means a refresh that failed or overran its deadline', async (t) => {
  await t.test('overran: stale once the deadline has passed', async (t) => {
    const headers = { 'cache-control': 'no-cache' }
    const { server, time, set } = await setup(t, headers)
    const refreshAt = set.status.nextRefreshAt!
    const hold = holdJwks(server, headers)
    time.advance(refreshAt - time.now)
    await hold.arrived
    time.advance(TIMEOUT + 1)
    t.equal(set.status.state, KeySetState.stale, 'the refresh is overdue')
    t.ok(set.key('a', 'RS256'), 'the last good keys still verify (stale-if-error)')
    hold.answer(503)
    await set.whenSettled()
    t.equal(set.status.state, KeySetState.stale)
    t.equal(set.status.lastError?.code, IssuerKeysErrorCode.httpStatus)
  })

  await t.test('failed at once: ready until the deadline it had, stale after', async (t) => {
    const headers = { 'cache-control': 'no-cache' }
    const { server, time, set } = await setup(t, headers)
    const refreshAt = set.status.nextRefreshAt!
    server.handler = (_req, res) => { res.writeHead(503).end() }
    time.advance(refreshAt - time.now)
    await set.whenSettled()
    t.equal(set.status.consecutiveFailures, 1)
    t.equal(set.status.state, KeySetState.ready, 'within the deadline the refresh had')
    time.advance(refreshAt + TIMEOUT - time.now + 1)
    t.equal(set.status.state, KeySetState.stale, 'then stale')
    t.ok(set.key('a', 'RS256'), 'keys still verify')
  })
})

t.test('with staleIfError 0 the keys keep verifying while a refresh on schedule runs', async (t) => {
  const headers = { 'cache-control': 'no-cache' }
  const { server, time, set } = await setup(t, headers, { staleIfErrorMs: 0 })
  const refreshAt = set.status.nextRefreshAt!
  const hold = holdJwks(server, headers)
  time.advance(refreshAt - time.now)
  await hold.arrived
  time.advance(1_000)
  t.ok(set.key('a', 'RS256'), 'the key verifies during the refresh (was refused)')
  t.equal(set.status.state, KeySetState.ready)
  hold.answer()
  await set.whenSettled()
  t.ok(set.key('a', 'RS256'))
})

t.test('with discovery, the deadline covers the discovery request as well', async (t) => {
  const headers = { 'cache-control': 'no-cache' }
  const { server, time, set } = await setup(t, headers, { discovery: true })
  const refreshAt = set.status.nextRefreshAt!
  const hold = holdJwks(server, headers)
  time.advance(refreshAt - time.now)
  await hold.arrived
  t.equal(server.hits('/.well-known/openid-configuration'), 2, 'the discovery document was asked again (no-cache)')
  time.advance(TIMEOUT + 1_000)
  t.equal(set.status.state, KeySetState.ready, 'past one request\'s deadline, within the cycle\'s')
  time.advance(TIMEOUT)
  t.equal(set.status.state, KeySetState.stale, 'past both')
  hold.answer()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready)
})

t.test('gateway: /readyz and portcullis_jwks_state stay ready while a no-cache IdP is refreshed', async (t) => {
  const headers = { 'cache-control': 'no-cache' }
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'a', alg: 'RS256', use: 'sig' })] }
  serveWith(server, headers)
  const gw = await startGateway(t, {
    ...baseConfig(makeKey('EdDSA'), [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]),
    issuers: [{
      name: 'corp',
      issuer: 'https://idp.example.test',
      jwksUri: server.jwksUrl,
      audiences: ['api://orders'],
      jwks: { minRefreshInterval: '1s', cooldown: '1s', refreshInterval: '10m', maxRefreshInterval: '1h', fetchTimeout: '5s' },
    }],
  })
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === KeySetState.ready), 'keys fetched at start')
  const hold = holdJwks(server, headers)
  t.teardown(() => hold.answer())
  await hold.arrived // the refresh, due one second after the start fetch, is running now
  t.equal(set.status.fetches, 2)
  const ready = await getWith(gw.adminUrl, '/readyz', undefined)
  t.equal(ready.status, 200)
  t.equal(ready.json().status, 'ready', '/readyz is not degraded by a refresh on schedule (was degraded)')
  const metrics = (await getWith(gw.adminUrl, '/metrics', undefined)).body
  t.match(metrics, /portcullis_jwks_state\{issuer="corp",state="ready"\} 1/, 'the metric says ready')
  t.match(metrics, /portcullis_jwks_state\{issuer="corp",state="stale"\} 0/)
  hold.answer()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready, 'the refresh succeeded')
  t.equal(set.status.failures, 0)
})
