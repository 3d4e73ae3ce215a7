import t, { type Test } from 'tap'
import { ConfigError } from '../../../src/errors.js'
import { IssuerKeysErrorCode } from '../../../src/tokens/issuers/errors.js'
import { REMOTE_KEY_SET_DEFAULTS } from '../../../src/tokens/issuers/options.js'
import { KeySetState, RemoteKeySet } from '../../../src/tokens/issuers/remote-key-set.js'
import { FakeTime, keyPair, makeSet, options, publicJwk, runFor, startJwksServer } from './helpers.js'

const MIN = REMOTE_KEY_SET_DEFAULTS.minRefreshIntervalMs
const rsa = keyPair('RSA')
const WELL_KNOWN = '/.well-known/openid-configuration'

async function setup (t: Test, issuerOverride?: (origin: string) => string) {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'a', alg: 'RS256' })] }
  server.discovery = { issuer: server.origin, jwks_uri: server.jwksUrl, token_endpoint: `${server.origin}/token` }
  const time = new FakeTime()
  const issuer = issuerOverride?.(server.origin) ?? server.origin
  const set = makeSet(t, options({ issuer, discovery: true, clock: time.clock, timers: time.timers }))
  return { server, time, set }
}

t.test('discovery: jwks_uri comes from the provider configuration', async (t) => {
  const { server, set } = await setup(t)
  set.start()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready)
  t.equal(set.status.jwksUri, server.jwksUrl)
  t.equal(server.hits(WELL_KNOWN), 1)
  t.equal(server.hits('/jwks'), 1)
  t.ok(set.key('a', 'RS256'))
})

t.test('discovery issuer mismatch is refused (OIDC Discovery §4.3)', async (t) => {
  const rows: Array<[string, (origin: string) => string, ((origin: string) => string) | undefined]> = [
    ['configured issuer has a trailing slash the provider does not', o => `${o}/`, undefined],
    ['provider names another issuer', o => o, o => `${o}/realms/other`],
    ['provider names the issuer in another case', o => o, o => o.toUpperCase()],
  ]
  for (const [name, configured, announced] of rows) {
    await t.test(name, async (t) => {
      const { server, set } = await setup(t, configured)
      if (announced !== undefined) server.discovery = { ...server.discovery, issuer: announced(server.origin) }
      set.start()
      await set.whenSettled()
      t.equal(set.status.state, KeySetState.failed)
      t.equal(set.status.lastError?.code, IssuerKeysErrorCode.issuerMismatch)
      t.equal(server.hits('/jwks'), 0, 'the jwks_uri of a mismatching document is never fetched')
      t.equal(set.key('a', 'RS256'), undefined)
    })
  }
})

t.test('discovery documents that cannot be used', async (t) => {
  const rows: Array<[string, (origin: string) => unknown, string]> = [
    ['no jwks_uri', o => ({ issuer: o }), IssuerKeysErrorCode.invalidDiscovery],
    ['jwks_uri not a URL', o => ({ issuer: o, jwks_uri: 'keys' }), IssuerKeysErrorCode.invalidDiscovery],
    ['jwks_uri on plain http off loopback', o => ({ issuer: o, jwks_uri: 'http://10.0.0.1/jwks' }), IssuerKeysErrorCode.insecureUrl],
    ['jwks_uri with another scheme', o => ({ issuer: o, jwks_uri: 'file:///etc/passwd' }), IssuerKeysErrorCode.insecureUrl],
    ['not an object', () => ['issuer'], IssuerKeysErrorCode.invalidDiscovery],
  ]
  for (const [name, doc, code] of rows) {
    await t.test(name, async (t) => {
      const { server, set } = await setup(t)
      server.discovery = doc(server.origin) as Record<string, unknown>
      set.start()
      await set.whenSettled()
      t.equal(set.status.lastError?.code, code)
      t.equal(set.status.state, KeySetState.failed)
    })
  }
})

t.test('the discovery document is cached; a failing jwks_uri makes the next attempt discover again', async (t) => {
  const { server, time, set } = await setup(t)
  // JWKS fresh for 2 min, the discovery document (no Cache-Control) for the default 10 min
  server.jwksHeaders = { 'cache-control': 'max-age=120' }
  set.start()
  await set.whenSettled()
  await runFor(time, set, 96_000) // one background JWKS refresh inside the discovery lifetime
  t.equal(server.hits('/jwks'), 2)
  t.equal(server.hits(WELL_KNOWN), 1, 'discovery not repeated while fresh')

  // the IdP moves its keys: the old URL answers 404, the new document names the new one
  server.discovery = { ...server.discovery, jwks_uri: `${server.origin}/jwks-v2` }
  server.handler = (req, res) => {
    if (req.url === '/jwks-v2') { res.writeHead(200).end(JSON.stringify(server.jwks)); return }
    if (req.url === '/jwks') { res.writeHead(404).end(); return }
    res.writeHead(200).end(JSON.stringify(server.discovery))
  }
  await runFor(time, set, 96_000)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.httpStatus, 'the old jwks_uri failed')
  t.ok(set.key('a', 'RS256'), 'keys kept meanwhile')
  await runFor(time, set, MIN)
  t.equal(set.status.state, KeySetState.ready)
  t.equal(set.status.jwksUri, `${server.origin}/jwks-v2`)
  t.equal(server.hits(WELL_KNOWN), 2)
  t.equal(server.hits('/jwks-v2'), 1)
})

t.test('a redirect on the discovery document is not followed', async (t) => {
  const { server, set } = await setup(t)
  server.handler = (req, res) => {
    if (req.url === WELL_KNOWN) { res.writeHead(301, { location: `${server.origin}/elsewhere` }).end(); return }
    res.writeHead(200).end(JSON.stringify(server.discovery))
  }
  set.start()
  await set.whenSettled()
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.redirect)
  t.equal(server.hits('/elsewhere'), 0)
})

t.test('http is refused unless allowInsecureHttp, and then only to loopback', async (t) => {
  const base = { ...REMOTE_KEY_SET_DEFAULTS, name: 'corp', algorithms: ['RS256'] }
  t.throws(() => new RemoteKeySet({ ...base, issuer: 'http://127.0.0.1:1', discovery: true }), ConfigError)
  t.throws(() => new RemoteKeySet({ ...base, issuer: 'x', discovery: false, jwksUri: 'http://127.0.0.1:1/jwks' }), ConfigError)
  t.throws(() => new RemoteKeySet({ ...base, issuer: 'http://idp.example.test', discovery: true, allowInsecureHttp: true }), ConfigError)
  t.throws(() => new RemoteKeySet({ ...base, issuer: 'https://idp.example.test', discovery: true, algorithms: ['HS256'] }), ConfigError)
  const ok = new RemoteKeySet({ ...base, issuer: 'http://127.0.0.1:1', discovery: true, allowInsecureHttp: true })
  ok.close()
  const https = new RemoteKeySet({ ...base, issuer: 'https://idp.example.test', discovery: true })
  t.equal(https.status.state, KeySetState.pending, 'constructing never fetches')
  https.close()
})
