import t, { type Test } from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { IDP_CLIENT_ID, IDP_RESOURCE, startIdp } from '../fixtures/idp.js'
import { decodeJwt, getWith, IDP_NAME, idpIssuer, idpClaims, signAsIdp, waitFor } from '../upstream/helpers.js'

// Identity in, the accepting side: access tokens of a real OpenID provider (oidc-provider 9 on
// 127.0.0.1, discovery, client credentials + resource indicator) pass the gateway, their
// scopes authorize, their claims reach the upstream as headers; routes choose issuers.
// Revoking an IdP token: issuers-revocation.test.ts.

const key = makeKey('EdDSA')

async function setup (t: Test, extra: { routes?: unknown[], identity?: unknown, issuers?: unknown[] } = {}) {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = extra.routes ?? [
    { name: 'read', prefix: '/read', upstream: upstream.url, auth: 'required', scopes: { '*': ['orders:read'] } },
    { name: 'admin', prefix: '/admin-only', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
  ]
  const config = {
    ...baseConfig(key, routes, { identity: extra.identity }),
    issuers: extra.issuers ?? [idpIssuer(idp)],
  }
  const gw = await startGateway(t, config)
  const set = gw.gateway.runtime.issuers[0]!.keys
  t.ok(await waitFor(() => set.status.state === 'ready'), `the IdP's keys arrive (${JSON.stringify(set.status.lastError)})`)
  return { idp, upstream, gw }
}

t.test('a token from the IdP is accepted, its scopes authorize and its claims reach the upstream', async (t) => {
  const { idp, upstream, gw } = await setup(t, {
    identity: { headers: [{ claim: 'sub', header: 'x-user-id' }, { claim: 'scope', header: 'x-user-scopes' }, { claim: 'client_id', header: 'x-user-client' }] },
  })
  const token = await idp.issueToken({ scope: 'orders:read' })
  t.equal(decodeJwt(token).header.typ, 'at+jwt', 'oidc-provider issues RFC 9068 tokens')

  const ok = await getWith(gw.url, '/read/orders', token, [['x-user-id', 'mallory']])
  t.equal(ok.status, 200, ok.body)
  const got = upstream.requests[0]!.headers
  t.equal(got['x-user-id'], IDP_CLIENT_ID, 'sub from the verified token, not the client copy')
  t.equal(got['x-user-scopes'], 'orders:read')
  t.equal(got['x-user-client'], IDP_CLIENT_ID)
  t.equal(got.authorization, undefined, 'the IdP token is not forwarded')

  const lacking = await getWith(gw.url, '/admin-only/x', token)
  t.equal(lacking.status, 403, 'the scopes of an IdP token authorize like our own')
  t.equal(lacking.json().code, 'insufficient_scope')
  const admin = await getWith(gw.url, '/admin-only/x', await idp.issueToken({ scope: 'orders:read admin' }))
  t.equal(admin.status, 200)

  // the same verify cache as our own tokens: a token's third use is a cache hit
  const before = gw.gateway.runtime.verifier.counts.hits
  for (let i = 0; i < 3; i++) t.equal((await getWith(gw.url, '/read/orders', token)).status, 200)
  t.ok(gw.gateway.runtime.verifier.counts.hits > before, 'external tokens are served from the verify cache')
  t.equal(idp.hits.get('/jwks'), 1, 'one JWKS fetch for all of it')
})

t.test('identity headers from nested claims and from claim names with dots and slashes', async (t) => {
  const { idp, upstream, gw } = await setup(t, {
    identity: {
      headers: [
        { claim: 'sub', header: 'x-user-id' },
        { path: ['realm_access', 'roles'], header: 'x-user-roles' },
        { claim: 'https://example.com/groups', header: 'x-user-groups' },
        { claim: 'org.id', header: 'x-user-org' },
        { path: ['tenant', 'id'], header: 'x-user-tenant' },
        { path: ['tenant', 'missing'], header: 'x-user-missing' },
        { claim: 'email_verified', header: 'x-user-email-verified' },
      ],
    },
  })
  // Keycloak- and Auth0-shaped claims, signed with the IdP's own published key
  const token = signAsIdp(idp, {
    sub: 'user-42',
    realm_access: { roles: ['orders-reader', 'offline_access'] },
    'https://example.com/groups': ['eng', 'ops'],
    'org.id': 'literal-dotted-name',
    org: { id: 'nested-org-must-not-be-used' },
    tenant: { id: 't-7' },
    email_verified: true,
  })
  const res = await getWith(gw.url, '/read/x', token, [['x-user-missing', 'spoofed'], ['x-user-tenant', 'spoofed']])
  t.equal(res.status, 200, res.body)
  const got = upstream.requests[0]!.headers
  t.equal(got['x-user-id'], 'user-42')
  t.equal(got['x-user-roles'], '["orders-reader","offline_access"]', 'a nested array as compact JSON')
  t.equal(got['x-user-groups'], '["eng","ops"]', 'a claim whose name is a URL')
  t.equal(got['x-user-org'], 'literal-dotted-name', 'a dot in a claim name is part of the name, not a path')
  t.equal(got['x-user-tenant'], 't-7', 'a nested path')
  t.equal(got['x-user-missing'], undefined, 'a missing nested claim sets nothing, and the client copy is gone')
  t.equal(got['x-user-email-verified'], 'true', 'a boolean as text')
})

t.test('where scopes live: scope string, scp array or string, roles array, [realm_access, roles]', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  // several issuer identifiers sharing the fixture IdP's JWKS (jwksUri: no discovery, so the
  // identifier is never fetched), one per place an IdP keeps scopes
  const shapes = [
    { name: 'keycloak-scope', scopeClaim: 'scope', grant: { scope: 'profile orders:read' }, wrong: { scp: ['orders:read'] } },
    { name: 'keycloak-roles', scopeClaim: ['realm_access', 'roles'], grant: { realm_access: { roles: ['orders:read'] } }, wrong: { scope: 'orders:read' } },
    { name: 'entra-delegated', scopeClaim: 'scp', grant: { scp: 'User.Read orders:read' }, wrong: { roles: ['orders:read'] } },
    { name: 'entra-app', scopeClaim: 'roles', grant: { roles: ['orders:read'] }, wrong: { scp: 'orders:read' } },
    { name: 'okta-scp', scopeClaim: 'scp', grant: { scp: ['openid', 'orders:read'] }, wrong: { scope: 'orders:read' } },
    { name: 'auth0-permissions', scopeClaim: 'permissions', grant: { permissions: ['orders:read'] }, wrong: { scope: 'orders:read admin' } },
  ]
  const issuers = shapes.map(s => ({
    name: s.name,
    issuer: `https://${s.name}.idp.test/`,
    jwksUri: `${idp.issuer}/jwks`,
    audiences: [IDP_RESOURCE],
    algorithms: ['RS256'],
    scopeClaim: s.scopeClaim,
    jwks: { minRefreshInterval: '1s', cooldown: '1s' },
  }))
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'read', prefix: '/read', upstream: upstream.url, auth: 'required', scopes: { '*': ['orders:read'] } }]),
    issuers,
  })
  t.ok(await waitFor(() => gw.gateway.runtime.issuers.every(i => i.keys.status.state === 'ready')))
  for (const s of shapes) {
    const iss = `https://${s.name}.idp.test/`
    const granted = await getWith(gw.url, '/read/x', signAsIdp(idp, { iss, scope: undefined, ...s.grant }))
    t.equal(granted.status, 200, `${s.name}: scopes read from ${JSON.stringify(s.scopeClaim)}`)
    const elsewhere = await getWith(gw.url, '/read/x', signAsIdp(idp, { iss, scope: undefined, ...s.wrong }))
    t.equal(elsewhere.status, 403, `${s.name}: scopes anywhere else do not count`)
    t.equal(elsewhere.json().code, 'insufficient_scope')
  }
  const badShape = await getWith(gw.url, '/read/x', signAsIdp(idp, { iss: 'https://entra-app.idp.test/', roles: { 'orders:read': true } }))
  t.equal(badShape.status, 401, 'a scope claim that is neither a string nor an array of strings makes the token invalid')
  t.equal(badShape.json().code, 'token_invalid_claim')
})

t.test('routes[].issuers: a route for our own tokens refuses the IdP, and the other way round', async (t) => {
  const { idp, gw } = await setup(t, {
    routes: [
      { name: 'own', prefix: '/own', upstream: 'http://127.0.0.1:9', auth: 'required', issuers: ['self'] },
      { name: 'idp', prefix: '/idp', upstream: 'http://127.0.0.1:9', auth: 'required', issuers: [IDP_NAME] },
    ],
  })
  // the routes above point nowhere on purpose: refusals must come before the proxy
  const idpToken = await idp.issueToken()
  const ownToken = signWith(key, goodClaims())
  const refusedIdp = await getWith(gw.url, '/own/x', idpToken)
  t.equal(refusedIdp.status, 401)
  t.equal(refusedIdp.json().code, 'token_issuer_not_allowed')
  t.match(refusedIdp.headers['www-authenticate'], /error="invalid_token"/)
  const refusedOwn = await getWith(gw.url, '/idp/x', ownToken)
  t.equal(refusedOwn.status, 401)
  t.equal(refusedOwn.json().code, 'token_issuer_not_allowed')
  t.equal((await getWith(gw.url, '/own/x', ownToken)).status, 502, 'our token passes /own (and reaches the dead upstream)')
  t.equal((await getWith(gw.url, '/idp/x', idpToken)).status, 502, 'the IdP token passes /idp')
})

t.test('claims of an IdP token are read from the verified payload only', async (t) => {
  const { idp, upstream, gw } = await setup(t)
  // same header and payload, signature from another key: refused, nothing reaches the upstream
  const genuine = signAsIdp(idp, { sub: 'alice' })
  const [h, p] = genuine.split('.')
  const forgedPayload = Buffer.from(JSON.stringify({ ...idpClaims(idp), sub: 'admin' })).toString('base64url')
  const spliced = `${h!}.${forgedPayload}.${genuine.split('.')[2]!}`
  const res = await getWith(gw.url, '/read/x', spliced)
  t.equal(res.status, 401)
  t.equal(res.json().code, 'token_invalid_signature')
  t.equal(upstream.requests.length, 0)
  t.equal((await getWith(gw.url, '/read/x', `${h!}.${p!}.${genuine.split('.')[2]!}`)).status, 200, 'the genuine one passes')
})
