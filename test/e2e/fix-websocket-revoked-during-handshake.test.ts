import t from 'tap'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'
import { beginWs, echoes } from '../fixtures/ws-client.js'
import { getWith, idpIssuer, waitFor } from '../upstream/helpers.js'
import { openStore } from '../../src/sessions/store.js'

// fix-websocket-revoked-during-handshake (found by a hostile review, stop 33): the gateway
// closes a WebSocket when its token is revoked or its signing key withdrawn, by checking the
// open sockets whenever the denylist or a key set changes. A handshake whose upstream had not
// answered yet was not among them: a logout or an admin revocation (or a key withdrawal) in
// that window was checked before the socket existed, and the socket then opened and relayed
// until the token's `exp` — while every HTTP request with the same token got 401. Now a socket
// is checked against the denylist and its key as it opens. Real parts: a `ws` upstream on
// 127.0.0.1 that holds its handshake answers until told, a real gateway and store, the admin
// API's revocation through the revocation feed, a real OpenID provider rotating its key.

const key = makeKey('EdDSA')
const ADMIN_TOKEN = 'd'.repeat(40)
const COOLDOWN_MS = 1_000

t.test('a token revoked while its upstream handshake is under way: the socket is closed as it opens', async (t) => {
  const upstream = await startWsUpstream({ holdHandshakes: true })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required' },
  ], { admin: { token: ADMIN_TOKEN } }), { store: await openStore({ dataDir: 'memory://' }) })
  const exp = Math.floor(Date.now() / 1000) + 600
  const stolen = signWith(key, goodClaims({ sub: 'alice', jti: 'jti-stolen', exp }))
  const other = signWith(key, goodClaims({ sub: 'alice', jti: 'jti-other', exp }))
  const revoked = beginWs(t, `${gw.wsUrl}/ws/a`, stolen)
  const kept = beginWs(t, `${gw.wsUrl}/ws/b`, other)
  t.ok(await waitFor(() => upstream.held() === 2), 'both handshakes were admitted and reached the upstream')

  const res = await raw(gw.adminUrl, '/admin/revocations/jti', {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ jti: 'jti-stolen', exp }),
  })
  t.equal(res.status, 204, 'an operator revokes the stolen token')
  // the revocation has reached this replica's denylist through the feed: a plain request
  // with the token is refused (the ws upstream answers plain HTTP with 426)
  t.ok(await waitFor(async () => (await raw(gw.url, '/ws/x', { headers: { authorization: `Bearer ${stolen}` } })).status === 401), 'HTTP requests with the token are refused')
  t.equal(gw.gateway.live.size, 0, 'no socket is open yet: the revocation had nothing to close')

  upstream.release()
  t.same(await revoked.outcome, { opened: true, code: 1008, reason: 'the access token was revoked' },
    'the revoked token\'s socket is closed as it opens (it relayed until exp before the fix)')
  t.same(await kept.outcome, { opened: true }, 'the other token\'s socket stays open')
  t.ok(await echoes(kept.ws, 'kept'), 'and relays')
  t.equal(gw.gateway.live.size, 1, 'one socket tracked')
})

t.test('a key withdrawn while its token\'s upstream handshake is under way: the socket is closed as it opens', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startWsUpstream({ holdHandshakes: true })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    ...baseConfig(key, [
      { name: 'chat', prefix: '/ws', upstream: upstream.url, websocket: true, auth: 'required' },
      { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    ]),
    issuers: [idpIssuer(idp)],
  })
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'ready'), 'keys fetched at start')

  const pending = beginWs(t, `${gw.wsUrl}/ws/a`, await idp.issueToken())
  t.ok(await waitFor(() => upstream.held() === 1), 'the handshake was admitted and reached the upstream')
  await new Promise(resolve => setTimeout(resolve, COOLDOWN_MS + 100)) // the unknown-kid cooldown counts from the start fetch
  await idp.rotate() // no overlap: the first key disappears
  const fresh = await idp.issueToken()
  // the new kid's first use fetches the set, which no longer has the first key
  t.equal((await getWith(gw.url, '/api/x', fresh)).status, 426, 'the new key verifies (the ws upstream answers plain HTTP with 426)')

  upstream.release()
  t.same(await pending.outcome, { opened: true, code: 1008, reason: "the access token's signing key was withdrawn" },
    'the withdrawn key\'s socket is closed as it opens')
  t.equal(gw.gateway.live.size, 0, 'nothing tracked')
})
