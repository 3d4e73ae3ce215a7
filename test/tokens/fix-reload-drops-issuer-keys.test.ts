import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { pino } from 'pino'
import type { IssuerConfig } from '../../src/config/types.js'
import { loadConfigText } from '../../src/config/load.js'
import { KeySetRegistry } from '../../src/runtime.js'
import { IssuerKeysErrorCode } from '../../src/tokens/issuers/errors.js'
import { KeySetState } from '../../src/tokens/issuers/remote-key-set.js'
import { baseConfig, makeKey, signWith, startGateway, type StartedGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { closeOf, echoes, openWs } from '../fixtures/ws-client.js'
import { getWith, idpIssuer, waitFor } from '../upstream/helpers.js'
import { keyPair, publicJwk, startJwksServer, type JwksServer } from './issuers/helpers.js'

// Found by an adversarial review of "Identity in" (finding 2): KeySetRegistry keyed an
// issuer's key set by every one of its settings, so a reload that changed only a cache knob
// (jwks.cooldown) or the pinned algorithms built a new, empty set. Requests in the window got
// 401 token_keys_unavailable; with the IdP unreachable at that moment, every token of the
// issuer was refused until it came back (stale-if-error: 12 h) and every WebSocket its tokens
// opened was closed 1008. Now the set is kept per key source (issuer, discovery, jwksUri,
// allowInsecureHttp) and reconfigured: keys, schedule and counters stay; new algorithms
// re-read the last good document at once, so a key no pinned algorithm accepts any more
// stops verifying, and a key still accepted keeps its handle (its sockets stay open).

const logger = pino({ level: 'silent' })
const rsa = keyPair('RSA')
const ec = keyPair('P-256')

/** an issuer as the config loader makes it; key-cache intervals long enough that only the test fetches */
function issuerConfig (server: JwksServer, overrides: Partial<IssuerConfig> = {}, jwks: Partial<IssuerConfig['jwks']> = {}): IssuerConfig {
  return {
    name: 'corp',
    issuer: 'https://idp.example.test',
    discovery: false,
    jwksUri: server.jwksUrl,
    audiences: ['api://orders'],
    algorithms: ['RS256', 'PS256', 'ES256'],
    typ: ['at+jwt'],
    scopeClaim: ['scope'],
    clockSkewSec: 30,
    maxTokenLifetimeSec: 86_400,
    requiredClaims: ['sub', 'iat'],
    allowInsecureHttp: true,
    ...overrides,
    jwks: {
      fetchTimeoutMs: 2_000,
      maxBytes: 262_144,
      refreshIntervalMs: 3_600_000,
      minRefreshIntervalMs: 600_000,
      maxRefreshIntervalMs: 3_600_000,
      cooldownMs: 600_000,
      staleIfErrorMs: 43_200_000,
      maxKeys: 100,
      ...jwks,
    },
  }
}

/** a JWKS server with an RSA key without `alg` (serves RS256 and PS256) and an EC key; a registry with its first set fetched */
async function registrySetup (t: Test) {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'r', use: 'sig' }), publicJwk(ec, { kid: 'e', use: 'sig' })] }
  let withdrawn = 0
  const registry = new KeySetRegistry({ onWithdrawn: () => { withdrawn++ } })
  t.teardown(() => registry.close())
  const set = registry.get(issuerConfig(server), { logger })
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready, 'keys fetched')
  t.equal(server.hits('/jwks'), 1)
  return { server, registry, set, withdrawn: () => withdrawn }
}

t.test('a reload changing only jwks settings keeps the set and its keys, with the IdP down', async (t) => {
  const { server, registry, set, withdrawn } = await registrySetup(t)
  const rsaKey = set.remoteKey('r', 'RS256')
  server.handler = (_req, res) => { res.writeHead(503).end() } // the IdP is unreachable now

  const next = registry.get(issuerConfig(server, {}, { cooldownMs: 2_000, fetchTimeoutMs: 3_000, staleIfErrorMs: 86_400_000, maxKeys: 50 }), { logger })
  t.equal(next, set, 'the same key set')
  registry.retain(new Set([next]))
  await next.whenSettled()
  t.equal(next.remoteKey('r', 'RS256'), rsaKey, 'the same key entry: tokens keep verifying, cached ones too')
  t.ok(rsaKey?.handle.alive, 'its handle lives')
  t.equal(next.status.state, KeySetState.ready, 'still ready')
  t.equal(next.status.keys, 2)
  t.equal(server.hits('/jwks'), 1, 'no fetch: a reload never refetches keys it has')
  t.equal(withdrawn(), 0, 'nothing withdrawn, no WebSocket closed')
  t.not(next.status.nextRefreshAt, undefined, 'retain() kept it running')

  const renamed = registry.get(issuerConfig(server, { name: 'corporate' }), { logger })
  t.equal(renamed, set, 'a rename keeps the set too')
  t.equal(renamed.status.name, 'corporate', 'under its new name')
})

t.test('a reload dropping an algorithm stops keys of it at once; the other keys keep their handles', async (t) => {
  const { server, registry, set, withdrawn } = await registrySetup(t)
  const rsaKey = set.remoteKey('r', 'RS256')!
  const ecKey = set.remoteKey('e', 'ES256')!
  t.ok(set.remoteKey('r', 'PS256'), 'the RSA key serves PS256 as well')
  server.handler = (_req, res) => { res.writeHead(503).end() }

  t.equal(registry.get(issuerConfig(server, { algorithms: ['RS256'] }), { logger }), set, 'the same set')
  t.equal(set.remoteKey('e', 'ES256'), undefined, 'the ES256 key no longer verifies, at once')
  t.equal(ecKey.handle.alive, false, 'its handle is dead: cached verifications and sockets of it end')
  t.equal(withdrawn(), 1, 'the gateway is told (it closes the sockets its tokens opened)')
  t.equal(set.remoteKey('r', 'PS256'), undefined, 'nor does PS256')
  t.equal(set.remoteKey('r', 'RS256')?.handle, rsaKey.handle, 'the RSA key keeps its handle for RS256')
  t.ok(rsaKey.handle.alive)
  t.same(set.status.kids, ['r'])
  t.equal(set.status.state, KeySetState.ready)
  t.equal(server.hits('/jwks'), 1, 'no fetch')

  // the algorithms come back: the last good document is read again, still without a fetch
  registry.get(issuerConfig(server), { logger })
  t.ok(set.remoteKey('e', 'ES256')?.handle.alive, 'the EC key verifies again')
  t.equal(set.remoteKey('r', 'PS256')?.handle, rsaKey.handle, 'the RSA key serves PS256 again, same handle')
  t.ok(rsaKey.handle.alive)
  t.equal(withdrawn(), 1, 'adding algorithms withdraws nothing')
  t.equal(server.hits('/jwks'), 1, 'no fetch')

  // pins no key of the document serves: none verifies, and the state says why
  registry.get(issuerConfig(server, { algorithms: ['EdDSA'] }), { logger })
  t.equal(set.remoteKey('r', 'RS256'), undefined)
  t.equal(rsaKey.handle.alive, false, 'every handle dies')
  t.equal(set.status.state, KeySetState.failed)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.noUsableKeys)
  t.equal(withdrawn(), 2)
})

t.test('another key source is another set', async (t) => {
  const { server, registry, set } = await registrySetup(t)
  const other = await startJwksServer()
  t.teardown(() => other.close())
  other.jwks = server.jwks
  const moved = registry.get(issuerConfig(other), { logger })
  t.not(moved, set, 'a new jwksUri: a new set')
  await moved.whenSettled()
  t.equal(other.hits('/jwks'), 1, 'which fetches from there')
  registry.retain(new Set([moved]))
  t.equal(set.status.nextRefreshAt, undefined, 'the old one is closed')
})

/** GET through the gateway: the status, and the error code of a refusal */
async function call (gw: StartedGateway, path: string, token: string): Promise<string> {
  const r = await getWith(gw.url, path, token)
  return r.status === 200 ? '200' : `${r.status} ${String(r.json().code ?? r.json().error)}`
}

t.test('gateway: a reload of the cache settings keeps a real IdP\'s tokens and WebSockets, the IdP down', async (t) => {
  const key = makeKey('EdDSA')
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const api = await startUpstream()
  t.teardown(() => api.close())
  const chat = await startWsUpstream()
  t.teardown(() => chat.close())
  const config = (issuer: Record<string, unknown>): Record<string, any> => ({
    ...baseConfig(key, [{ name: 'chat', prefix: '/ws', upstream: chat.url, websocket: true, auth: 'required' },
      { name: 'api', prefix: '/api', upstream: api.url, auth: 'required' }]),
    issuers: [idpIssuer(idp, issuer)],
  })
  const gw = await startGateway(t, config({}))
  const set = () => gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set().status.state === KeySetState.ready), 'keys fetched at start')
  const token = await idp.issueToken()
  t.equal(await call(gw, '/api/x', token), '200')
  const socket = await openWs(t, `${gw.wsUrl}/ws/a`, token)
  t.ok(await echoes(socket.ws, 'before'), 'the IdP token\'s WebSocket relays')
  const jwksHits = idp.hits.get('/jwks')

  const reload = async (issuer: Record<string, unknown>): Promise<void> => {
    const result = await gw.gateway.reload(loadConfigText(stringify(config(issuer)), { env: {} }))
    t.equal(result.ok, true, 'reloaded')
    // the open sockets are checked against the new configuration once its keys are settled
    t.ok(await waitFor(() => gw.gateway.live.checkedGeneration === gw.gateway.runtime.generation), 'open sockets checked')
  }

  // the IdP up: a cache knob and one more algorithm
  await reload({ jwks: { cooldown: '3s' }, algorithms: ['RS256', 'ES256'] })
  await set().whenSettled()
  t.equal(idp.hits.get('/jwks'), jwksHits, 'the reload fetched nothing')
  t.equal(await call(gw, '/api/x', token), '200')

  // the IdP away (a blip, maintenance), and an operator tunes the cooldown
  await idp.stop()
  await reload({ jwks: { cooldown: '2s' } })
  t.equal(await call(gw, '/api/x', token), '200', 'its tokens still verify (was 401 token_keys_unavailable)')
  t.equal(await closeOf(socket, 300), undefined, 'its WebSocket stays open (was closed 1008)')
  t.ok(await echoes(socket.ws, 'after'), 'and relays')
  t.equal(set().status.state, KeySetState.ready, 'the key set is ready: its keys are fresh')
  const ready = await getWith(gw.adminUrl, '/readyz', undefined)
  t.equal(ready.json().status, 'ready', '/readyz is not degraded by a reload')
})

t.test('gateway: a reload dropping an algorithm refuses its tokens and closes their sockets at once, and only those', async (t) => {
  const key = makeKey('EdDSA')
  const rsaSigner = makeKey('RS256', 'r')
  const ecSigner = makeKey('ES256', 'e')
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [rsaSigner, ecSigner].map(k => ({ ...k.publicKey!.export({ format: 'jwk' }), kid: k.kid, alg: k.alg, use: 'sig' })) }
  const api = await startUpstream()
  t.teardown(() => api.close())
  const chat = await startWsUpstream()
  t.teardown(() => chat.close())
  const ISS = 'https://idp.example.test'
  const config = (algorithms: string[]): Record<string, any> => ({
    ...baseConfig(key, [{ name: 'chat', prefix: '/ws', upstream: chat.url, websocket: true, auth: 'required' },
      { name: 'api', prefix: '/api', upstream: api.url, auth: 'required' }]),
    issuers: [{
      name: 'corp',
      issuer: ISS,
      jwksUri: server.jwksUrl,
      audiences: ['api://orders'],
      algorithms,
      jwks: { minRefreshInterval: '10m', refreshInterval: '1h', maxRefreshInterval: '1h', cooldown: '10m' },
    }],
  })
  const gw = await startGateway(t, config(['RS256', 'ES256']))
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === KeySetState.ready), 'keys fetched at start')
  const now = Math.floor(Date.now() / 1000)
  const claims = { iss: ISS, aud: 'api://orders', sub: 'svc', iat: now, exp: now + 600, scope: 'orders:read' }
  const rsaToken = signWith(rsaSigner, claims)
  const ecToken = signWith(ecSigner, claims)
  t.equal(await call(gw, '/api/x', rsaToken), '200')
  t.equal(await call(gw, '/api/x', ecToken), '200')
  const rsaSocket = await openWs(t, `${gw.wsUrl}/ws/r`, rsaToken)
  const ecSocket = await openWs(t, `${gw.wsUrl}/ws/e`, ecToken)

  server.handler = (_req, res) => { res.writeHead(503).end() } // and the IdP is away
  const result = await gw.gateway.reload(loadConfigText(stringify(config(['RS256'])), { env: {} }))
  t.equal(result.ok, true, 'reloaded')
  t.equal(await call(gw, '/api/x', ecToken), '401 token_invalid_algorithm', 'ES256 tokens refused at once')
  t.equal(await call(gw, '/api/x', rsaToken), '200', 'RS256 tokens verify (was 401 token_keys_unavailable)')
  // closed as its key's handle dies (the reload's own check would close it as well)
  t.same(await closeOf(ecSocket), { code: 1008, reason: "the access token's signing key was withdrawn" }, 'the ES256 token\'s socket is closed')
  t.ok(await waitFor(() => gw.gateway.live.checkedGeneration === gw.gateway.runtime.generation), 'open sockets checked')
  t.equal(await closeOf(rsaSocket, 300), undefined, 'the RS256 token\'s socket stays open')
  t.ok(await echoes(rsaSocket.ws, 'still'), 'and relays')
  t.equal(server.hits('/jwks'), 1, 'no key was fetched again')
})
