/**
 * fix-idp-id-token-as-access-token (a hostile review of identity in, 2026-12-05): with
 * `typ: [JWT]` — the README's Keycloak and Entra recipes, whose access tokens say only `JWT` in
 * their header — any JWT the provider signs for a configured audience was taken for an access
 * token: an ID token (kept in browser storage, sent as `id_token_hint` in logout URLs) or a
 * back-channel logout token reached the upstream as that user, wherever the API's audience is
 * also a client id users log in with. What an access token never carries now gives the others
 * away: `at_hash`, `c_hash`, `s_hash`, `events`, or a payload `typ` other than `Bearer`
 * (Keycloak marks each token it signs). A token whose header says `at+jwt` is an access token by
 * its issuer's word (RFC 9068) and is not second-guessed.
 *
 * A real OpenID provider's key (oidc-provider, test/fixtures/idp.ts) signs every row; the
 * gateway fetched it from the provider's JWKS.
 */
import t from 'tap'
import { makeKey, raw } from '../fixtures/gateway.js'
import { IDP_RESOURCE } from '../fixtures/idp.js'
import { signAsIdp, startIdpGateway } from '../upstream/helpers.js'

const { idp, gw, upstream } = await startIdpGateway(t, makeKey('EdDSA'), { issuer: { typ: ['JWT', 'at+jwt'] } })

const nowSec = Math.floor(Date.now() / 1000)
type Row = [name: string, payload: Record<string, unknown>, headerTyp: string, expected: 200 | 'token_invalid_type']
const rows: Row[] = [
  ['an access token (Keycloak: payload typ Bearer)', { typ: 'Bearer', azp: 'orders-spa', scope: 'orders:read' }, 'JWT', 200],
  ['an access token with no payload typ (Entra, Auth0, Okta)', { scope: 'orders:read' }, 'JWT', 200],
  ['an older Keycloak access token with a nonce', { typ: 'Bearer', nonce: 'n-0S6_WzA2Mj', auth_time: nowSec - 5 }, 'JWT', 200],
  ['payload typ in another case', { typ: 'bearer' }, 'JWT', 200],
  ['a Keycloak ID token (typ ID, nonce, at_hash)', { typ: 'ID', nonce: 'n-0S6_WzA2Mj', at_hash: 'HK6E_P6Dh8Y93mRNtsDB1Q', auth_time: nowSec - 5, scope: undefined }, 'JWT', 'token_invalid_type'],
  ['an ID token with no payload typ but an at_hash', { at_hash: 'HK6E_P6Dh8Y93mRNtsDB1Q', scope: undefined }, 'JWT', 'token_invalid_type'],
  ['an ID token from the hybrid flow (c_hash)', { c_hash: 'LDktKdoQak3Pk0cnXxCltA', scope: undefined }, 'JWT', 'token_invalid_type'],
  ['a FAPI ID token (s_hash)', { s_hash: 'x8Sk9s2dKqA', scope: undefined }, 'JWT', 'token_invalid_type'],
  ['a back-channel logout token (events)', { events: { 'http://schemas.openid.net/event/backchannel-logout': {} }, scope: undefined }, 'JWT', 'token_invalid_type'],
  ['a Keycloak logout token (typ Logout)', { typ: 'Logout', scope: undefined }, 'JWT', 'token_invalid_type'],
  ['a Keycloak refresh token (typ Refresh)', { typ: 'Refresh' }, 'JWT', 'token_invalid_type'],
  ['a payload typ that is not a string', { typ: ['Bearer'] }, 'JWT', 'token_invalid_type'],
  ['an at+jwt token: an access token by its issuer\'s word', { typ: 'ID' }, 'at+jwt', 200],
]
for (const [name, payload, headerTyp, expected] of rows) {
  t.test(name, async (t) => {
    const before = upstream.requests.length
    const res = await raw(gw.url, '/api/x', { headers: [['authorization', `Bearer ${signAsIdp(idp, { aud: IDP_RESOURCE, ...payload }, { typ: headerTyp })}`]] })
    if (expected === 200) {
      t.equal(res.status, 200, 'accepted')
      t.equal(upstream.requests.length, before + 1, 'and proxied')
    } else {
      t.equal(res.status, 401, 'refused')
      t.equal((JSON.parse(res.body) as { code?: string }).code, expected, 'as not an access token')
      t.equal(upstream.requests.length, before, 'never proxied')
    }
  })
}
