import t, { type Test } from 'tap'
import { stringify } from 'yaml'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startIdp, IDP_RESOURCE } from '../fixtures/idp.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { closeOf, echoes, openWs } from '../fixtures/ws-client.js'
import { getWith, idpIssuer, waitFor } from '../upstream/helpers.js'
import { loadConfigText } from '../../src/config/load.js'

// Found by an adversarial review (stop 29): once an identity provider stopped publishing a
// key, HTTP requests with its tokens were refused (token_unknown_key), but a WebSocket
// already open with such a token kept reaching the upstream until the token's `exp` — the
// attacker's choice, up to the issuer's maxTokenLifetime, if the key was withdrawn because it
// leaked. Key handles lived in each configuration's ExternalIssuer, so after a reload even
// the cached HTTP verification of an old handle was never told. Now the key set kills the
// handle of every key it withdraws and the gateway closes (1008) the sockets whose token it
// signed; a reload verifies every open socket's token again and closes the ones the new
// configuration refuses.

const key = makeKey('EdDSA')
const COOLDOWN_MS = 1_000
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function configFor (upstreamUrl: string, issuers: unknown[]): Record<string, any> {
  return {
    ...baseConfig(key, [{ name: 'chat', prefix: '/ws', upstream: upstreamUrl, websocket: true, auth: 'required' },
      { name: 'api', prefix: '/api', upstream: upstreamUrl, auth: 'required' }]),
    issuers,
  }
}

/** a real IdP, a ws upstream and a gateway with its keys fetched */
async function start (t: Test): Promise<{ idp: Awaited<ReturnType<typeof startIdp>>, upstream: Awaited<ReturnType<typeof startWsUpstream>>, gw: Awaited<ReturnType<typeof startGateway>> }> {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, configFor(upstream.url, [idpIssuer(idp)]))
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'ready'), 'keys fetched at start')
  return { idp, upstream, gw }
}

t.test("a withdrawn key closes the sockets its tokens opened; the new key's stay open", async (t) => {
  const { idp, gw } = await start(t)

  const old = await openWs(t, `${gw.wsUrl}/ws/a`, await idp.issueToken())
  t.ok(await echoes(old.ws, 'before'), 'a socket with the first key\'s token relays')
  const own = await openWs(t, `${gw.wsUrl}/ws/own`, signWith(key, goodClaims({ sub: 'alice' })))

  await sleep(COOLDOWN_MS + 100) // the unknown-kid cooldown counts from the start fetch
  await idp.rotate() // no overlap: the first key disappears
  const fresh = await idp.issueToken()
  // the new kid's first use fetches the set, which no longer has the first key
  t.equal((await getWith(gw.url, '/api/x', fresh)).status, 426, 'the new key verifies (the ws upstream answers plain HTTP with 426)')
  const ended = await closeOf(old)
  t.same(ended, { code: 1008, reason: "the access token's signing key was withdrawn" }, 'the old socket is closed with 1008 as the key is withdrawn')

  const next = await openWs(t, `${gw.wsUrl}/ws/b`, fresh)
  t.ok(await echoes(next.ws, 'after'), "a socket with the new key's token relays")
  t.ok(await echoes(own.ws, 'own'), "a socket with the gateway's own token is untouched")
  t.equal(gw.gateway.live.size, 2, 'two sockets left open')
})

t.test('a reload closes the sockets whose tokens the new configuration refuses, and only those', async (t) => {
  const { idp, upstream, gw } = await start(t)

  const foreign = await openWs(t, `${gw.wsUrl}/ws/a`, await idp.issueToken())
  const own = await openWs(t, `${gw.wsUrl}/ws/own`, signWith(key, goodClaims({ sub: 'alice' })))

  // the same provider, now expected to name another audience: its tokens are no longer for us
  const stricter = loadConfigText(stringify(configFor(upstream.url, [idpIssuer(idp, { audiences: [`${IDP_RESOURCE}/other`] })])), { env: {} })
  t.equal((await gw.gateway.reload(stricter)).ok, true, 'reloaded')
  const ended = await closeOf(foreign)
  t.same(ended, { code: 1008, reason: 'the access token is not accepted by the new configuration' }, "the provider's socket is closed")
  t.ok(await echoes(own.ws, 'own'), "the gateway's own token still verifies: its socket stays open")

  // a reload that keeps trusting a socket's token keeps it, with the new configuration's
  // verification: a key the new key set withdraws still reaches it
  const again = loadConfigText(stringify(configFor(upstream.url, [idpIssuer(idp, { jwks: { refreshInterval: '30m' } })])), { env: {} })
  t.equal((await gw.gateway.reload(again)).ok, true, 'reloaded with new key-fetch settings (a new key set)')
  const third = await openWs(t, `${gw.wsUrl}/ws/c`, await idp.issueToken())
  t.equal((await gw.gateway.reload(loadConfigText(stringify(configFor(upstream.url, [idpIssuer(idp)])), { env: {} }))).ok, true, 'reloaded back')
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'), 'the new key set fetched')
  t.ok(await echoes(third.ws, 'kept'), 'a socket whose token the new configuration accepts stays open')

  // the socket's token was verified by the key set of the second configuration, closed by
  // the third: only the re-verification at the reload ties it to the third's keys
  await sleep(COOLDOWN_MS + 100)
  await idp.rotate()
  t.equal((await getWith(gw.url, '/api/x', await idp.issueToken())).status, 426, 'the new kid is fetched')
  const withdrawn = await closeOf(third)
  t.same(withdrawn, { code: 1008, reason: "the access token's signing key was withdrawn" }, 'the key withdrawn after the reloads closes it')
})
