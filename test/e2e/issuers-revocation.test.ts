import t from 'tap'
import { request } from 'undici'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { startIdp } from '../fixtures/idp.js'
import { openStore } from '../../src/sessions/store.js'
import { decodeJwt, getWith, idpIssuer, signAsIdp, waitFor } from '../upstream/helpers.js'

// External tokens go through the same verify cache and revocation checks as our own: an
// operator cuts off a stolen IdP token by its jti through the admin API, on every replica
// (the denylist), even while the token sits in the verify cache.

const key = makeKey('EdDSA')
const ADMIN_TOKEN = 'admin-token-for-the-issuers-revocation-suite-0123'

t.test('an operator revokes one IdP token by jti through the admin API', async (t) => {
  const store = await openStore({ dataDir: 'memory://' })
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'read', prefix: '/read', upstream: upstream.url, auth: 'required' }], { admin: { token: ADMIN_TOKEN } }),
    issuers: [idpIssuer(idp)],
  }, { store })
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'))
  const stolen = await idp.issueToken()
  const other = await idp.issueToken()
  const { jti, exp } = decodeJwt(stolen).payload
  t.type(jti, 'string', 'oidc-provider sets jti')
  // used three times: verified, admitted to the verify cache, then served from it
  for (let i = 0; i < 3; i++) t.equal((await getWith(gw.url, '/read/x', stolen)).status, 200)

  const revoke = await request(`${gw.adminUrl}/admin/revocations/jti`, {
    method: 'POST',
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ jti, exp }),
  })
  t.equal(revoke.statusCode, 204, await revoke.body.text())
  t.ok(await waitFor(async () => {
    const r = await getWith(gw.url, '/read/x', stolen)
    return r.status === 401 && r.json().code === 'token_revoked'
  }), 'the cached IdP token is refused as revoked')
  t.equal((await getWith(gw.url, '/read/x', other)).status, 200, 'other tokens of the IdP are not')
  // a token signed by hand with the same jti (the same IdP key) is revoked too: the check is by jti
  const sameJti = signAsIdp(idp, { jti })
  const r = await getWith(gw.url, '/read/x', sameJti)
  t.equal(r.json().code, 'token_revoked')
})
