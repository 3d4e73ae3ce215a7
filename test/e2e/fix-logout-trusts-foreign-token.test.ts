import t from 'tap'
import { createPublicKey } from 'node:crypto'
import { AUDIENCE, baseConfig, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'
import { startJwksServer } from '../tokens/issuers/helpers.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'

// Findings of an adversarial review of the auth endpoints (stop 28), against a real gateway,
// a real JWKS server, the embedded store and a recording upstream:
// - fix-logout-trusts-foreign-token: /auth/logout took `sid` and `jti` from any verified
//   access token, whatever its issuer. A partner identity provider — trusted only on its own
//   route — that put a local user's sid (it reaches upstreams in assertions and events) into
//   one of its tokens ended that user's session through /auth/logout, and her access token
//   with its jti. Now a foreign token names no session, and its jti is revoked under its
//   issuer (an identity provider's jtis are its own).
// - fix-logout-refused-beside-refresh-token: an access token refused by authenticate (here
//   revoked by an operator) beside a valid refresh token made the logout a 401: nothing was
//   revoked and the cookie stayed, so the session lived on. The SDK sends whatever access
//   token it still holds. Now the refused token is ignored (never used) beside a refresh
//   token, and the refresh token's session ends.

const partner = 'https://partner.test'
const ADMIN_TOKEN = 'a'.repeat(40)

function payloadOf (jwt: string): Record<string, any> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString())
}

t.test('logout and foreign or refused access tokens', async (t) => {
  const key = makeKey('EdDSA')
  const idpKey = makeKey('RS256')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  jwks.jwks = { keys: [{ ...createPublicKey(idpKey.publicPem).export({ format: 'jwk' }), kid: idpKey.kid, alg: 'RS256', use: 'sig' }] }
  const store = await openStore({ dataDir: 'memory://' })
  for (const name of ['alice', 'bob', 'carol']) await usersAdd(store, { name, password: `pw-${name}`, scopes: ['orders:read'] })
  const gw = await startGateway(t, {
    ...baseConfig(key, [
      { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required', issuers: ['self'] },
      { name: 'partner', prefix: '/partner', upstream: upstream.url, auth: 'required', issuers: ['partner'] },
    ], { tokens: { refresh: { transport: 'both' } }, admin: { token: ADMIN_TOKEN } }),
    issuers: [{ name: 'partner', issuer: partner, jwksUri: jwks.jwksUrl, audiences: [AUDIENCE], algorithms: ['RS256'] }],
  }, { store })
  await until('the partner issuer ready', async () => {
    const r = await raw(gw.adminUrl, '/readyz')
    return r.status === 200 && !r.body.includes('"state":"degraded"')
  })
  const post = async (base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
    await raw(base, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const login = async (user: string): Promise<{ access: string, refresh: string, claims: Record<string, any> }> => {
    const res = await post(gw.url, '/auth/login', { username: user, password: `pw-${user}` })
    t.equal(res.status, 200, `${user} logs in`)
    return { access: res.json().access_token, refresh: res.json().refresh_token, claims: payloadOf(res.json().access_token) }
  }
  const get = async (path: string, token: string): Promise<RawResponse> => await raw(gw.url, path, { headers: { authorization: `Bearer ${token}` } })
  const now = Math.floor(Date.now() / 1000)
  const partnerToken = (claims: Record<string, unknown>): string =>
    signWith(idpKey, { iss: partner, aud: AUDIENCE, sub: 'partner-user', iat: now, exp: now + 300, jti: `p-${Math.random()}`, ...claims })
  const revokeJti = async (body: Record<string, unknown>): Promise<number> =>
    (await post(gw.adminUrl, '/admin/revocations/jti', body, { authorization: `Bearer ${ADMIN_TOKEN}` })).status

  t.test('fix-logout-trusts-foreign-token: a partner token naming a local session ends nothing of it', async (t) => {
    const alice = await login('alice')
    const forged = partnerToken({ sid: alice.claims.sid, jti: alice.claims.jti })
    t.equal((await get('/api/x', forged)).json().code, 'token_issuer_not_allowed', 'the partner is not trusted on /api')
    t.equal((await get('/partner/x', forged)).status, 200, 'the partner token is good on its own route')
    const out = await post(gw.url, '/auth/logout', {}, { authorization: `Bearer ${forged}` })
    t.equal(out.status, 204, 'the partner token logs itself out')
    await until('the partner token refused', async () => (await get('/partner/x', forged)).status === 401)
    t.equal((await get('/partner/x', forged)).json().code, 'token_revoked', 'its own jti is revoked')
    t.equal((await get('/api/x', alice.access)).status, 200, 'alice\'s access token (same jti, same sid) still passes')
    const refreshed = await post(gw.url, '/auth/refresh', { refresh_token: alice.refresh })
    t.equal(refreshed.status, 200, 'alice\'s session still refreshes')
    const other = partnerToken({})
    t.equal((await get('/partner/x', other)).status, 200, 'another partner token is untouched')
  })

  t.test('the admin API revokes a partner jti under its issuer; a bare jti refuses every issuer\'s token that carries it', async (t) => {
    const bob = await login('bob')
    const theirs = partnerToken({ jti: bob.claims.jti })
    t.equal(await revokeJti({ jti: bob.claims.jti, exp: now + 300, iss: partner }), 204)
    await until('the partner jti refused', async () => (await get('/partner/x', theirs)).status === 401)
    t.equal((await get('/api/x', bob.access)).status, 200, 'bob\'s token, with the same jti, untouched by the partner\'s revocation')
    const other = partnerToken({ jti: `other-${Math.random()}` })
    t.equal(await revokeJti({ jti: JSON.parse(Buffer.from(other.split('.')[1]!, 'base64url').toString()).jti, exp: now + 300 }), 204, 'a bare jti (no iss)')
    await until('the partner token refused under its bare jti', async () => (await get('/partner/x', other)).status === 401)
    t.equal((await get('/partner/x', other)).json().code, 'token_revoked', 'the fail-closed direction: as before, and as older replicas write it')
  })

  t.test('fix-logout-refused-beside-refresh-token: a refused access token does not stop the refresh token\'s logout', async (t) => {
    const carol = await login('carol')
    // an operator revokes carol's access token only (not her session)
    t.equal(await revokeJti({ jti: carol.claims.jti, exp: carol.claims.exp }), 204)
    await until('carol\'s token refused', async () => (await get('/api/x', carol.access)).status === 401)
    const alone = await post(gw.url, '/auth/logout', {}, { authorization: `Bearer ${carol.access}` })
    t.equal(alone.status, 401, 'the revoked access token alone: 401')
    t.equal(alone.json().code, 'token_revoked')
    t.equal((await post(gw.url, '/auth/refresh', { refresh_token: carol.refresh })).status, 200, 'which revoked nothing')
    // a refused token names nothing: beside bob's refresh token it does not end carol's session
    const bob = await login('bob')
    const carol2 = await login('carol')
    const beside = await post(gw.url, '/auth/logout', { refresh_token: bob.refresh }, { authorization: `Bearer ${carol.access}` })
    t.equal(beside.status, 204, 'bob\'s refresh token beside carol\'s revoked access token: 204')
    t.equal((await post(gw.url, '/auth/refresh', { refresh_token: bob.refresh })).json().error, 'invalid_grant', 'bob\'s session ended')
    t.equal((await post(gw.url, '/auth/refresh', { refresh_token: carol2.refresh })).status, 200, 'carol\'s other session lives')
    // carol logs out with her refresh token and the revoked access token the SDK still holds
    const own = await post(gw.url, '/auth/logout', { refresh_token: carol2.refresh }, { authorization: `Bearer ${carol.access}` })
    t.equal(own.status, 204, 'her logout succeeds')
    t.equal((await post(gw.url, '/auth/refresh', { refresh_token: carol2.refresh })).json().error, 'invalid_grant', 'and her session ended')
    // an expired or forged access token beside a refresh token: the same
    const dave = await login('alice')
    const forged = signWith(makeKey('EdDSA', key.kid), dave.claims)
    t.equal((await post(gw.url, '/auth/logout', { refresh_token: dave.refresh }, { authorization: `Bearer ${forged}` })).status, 204, 'a forged access token beside a refresh token: 204')
    t.equal((await post(gw.url, '/auth/refresh', { refresh_token: dave.refresh })).json().error, 'invalid_grant', 'the session ended')
    // a malformed request is still refused whatever came with it
    const two = await raw(gw.url, '/auth/logout', {
      method: 'POST',
      headers: [['content-type', 'application/json'], ['authorization', `Bearer ${carol.access}`], ['authorization', `Bearer ${carol.access}`]],
      body: JSON.stringify({ refresh_token: carol2.refresh }),
    })
    t.equal(two.status, 400, 'two Authorization headers: 400')
  })
})
