import t from 'tap'
import { createVerifier } from 'fast-jwt'
import { IssuerKeysErrorCode } from '../../../src/tokens/issuers/errors.js'
import { REMOTE_KEY_SET_DEFAULTS } from '../../../src/tokens/issuers/options.js'
import { KeySetState, type RemoteKeySet } from '../../../src/tokens/issuers/remote-key-set.js'
import { IDP_CLIENT_ID, IDP_RESOURCE, startIdp, type IdpAlgorithm } from '../../fixtures/idp.js'
import { FakeTime, makeSet, options, runFor } from './helpers.js'

// End to end against a real OpenID provider (panva/oidc-provider 9): discovery, its JWT
// access tokens, key rotation, the IdP going down and coming back.

const MIN = REMOTE_KEY_SET_DEFAULTS.minRefreshIntervalMs

function decode (token: string): { header: Record<string, unknown>, payload: Record<string, unknown> } {
  const [h, p] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(h!, 'base64url').toString()) as Record<string, unknown>,
    payload: JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>,
  }
}

function verifierFor (set: RemoteKeySet, kid: string, alg: string, issuer: string) {
  const entry = set.remoteKey(kid, alg)
  if (entry === undefined) throw new Error(`no key for ${kid}`)
  // fast-jwt 6 takes PEM only (a KeyObject throws FAST_JWT_INVALID_KEY): the entry carries both
  return createVerifier({
    key: entry.pem,
    algorithms: [alg as 'RS256'],
    allowedIss: issuer,
    allowedAud: IDP_RESOURCE,
    checkTyp: 'at+jwt',
    requiredClaims: ['exp', 'iat', 'iss', 'aud', 'sub', 'jti'],
    cache: false,
  })
}

t.test('discovery, a real JWT access token, rotation fetched on demand, IdP down and back', async (t) => {
  const idp = await startIdp({ alg: 'RS256' })
  t.teardown(() => idp.close())
  const time = new FakeTime()
  const set = makeSet(t, options({ issuer: idp.issuer, discovery: true, algorithms: ['RS256', 'PS256'], clock: time.clock, timers: time.timers }))
  set.start()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.ready, JSON.stringify(set.status.lastError))
  t.equal(set.status.jwksUri, `${idp.issuer}/jwks`)

  const token = await idp.issueToken({ scope: 'orders:read admin' })
  const { header, payload } = decode(token)
  // what oidc-provider 9 puts in a client-credentials JWT access token (RFC 9068)
  t.same(header, { alg: 'RS256', typ: 'at+jwt', kid: idp.currentKey.kid }, 'header: typ at+jwt and the kid')
  t.equal(payload.iss, idp.issuer)
  t.equal(payload.aud, IDP_RESOURCE, 'aud is the resource indicator, as a string')
  t.equal(payload.scope, 'orders:read admin', 'scope is a space-separated string')
  t.equal(payload.client_id, IDP_CLIENT_ID)
  t.equal(payload.sub, IDP_CLIENT_ID, 'sub is the client for client credentials')
  t.type(payload.jti, 'string')
  t.equal((payload.exp as number) - (payload.iat as number), 300)

  const claims = verifierFor(set, idp.currentKey.kid, 'RS256', idp.issuer)(token) as Record<string, unknown>
  t.equal(claims.jti, payload.jti, 'the token verifies with the KeyObject from the set')
  t.equal(idp.hits.get('/jwks'), 1)

  // rotation without overlap: the old key disappears, tokens carry a new kid
  const oldKid = idp.currentKey.kid
  const next = await idp.rotate()
  const token2 = await idp.issueToken()
  t.equal(decode(token2).header.kid, next.kid)
  t.equal(set.key(next.kid, 'RS256'), undefined, 'not known yet')
  t.equal(await set.refetchForUnknownKid(next.kid), false, 'within the cooldown: no fetch')
  t.equal(idp.hits.get('/jwks'), 1, 'no JWKS request since the start fetch')
  time.advance(MIN)
  t.equal(await set.refetchForUnknownKid(next.kid), true, 'fetched on demand after the cooldown')
  t.equal(idp.hits.get('/jwks'), 2)
  t.ok(verifierFor(set, next.kid, 'RS256', idp.issuer)(token2))
  t.equal(set.key(oldKid, 'RS256'), undefined, 'the withdrawn key no longer verifies')

  // rotation with overlap: both keys verify
  const third = await idp.rotate({ keepPrevious: true })
  time.advance(MIN)
  t.equal(await set.refetchForUnknownKid(third.kid), true)
  t.ok(set.key(next.kid, 'RS256'), 'the previous key, still published, still verifies')
  t.ok(set.key(third.kid, 'RS256'))

  // IdP down: refreshes fail, the keys stay (stale-if-error); back: fresh again
  await idp.stop()
  await runFor(time, set, 10 * 60_000 + 1)
  t.equal(set.status.state, KeySetState.stale)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.network)
  t.ok(set.key(third.kid, 'RS256'), 'still verifying while the IdP is down')
  await idp.start()
  await runFor(time, set, MIN)
  t.equal(set.status.state, KeySetState.ready)
  t.equal(set.status.lastError, undefined)
})

t.test('discovery issuer mismatch with a real provider: a trailing slash is another issuer', async (t) => {
  const idp = await startIdp()
  t.teardown(() => idp.close())
  const time = new FakeTime()
  const set = makeSet(t, options({ issuer: `${idp.issuer}/`, discovery: true, algorithms: ['RS256'], clock: time.clock, timers: time.timers }))
  set.start()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.failed)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.issuerMismatch)
  t.equal(idp.hits.get('/.well-known/openid-configuration'), 1)
  t.equal(idp.hits.get('/jwks'), undefined, 'keys of a mismatching provider are never fetched')
})

t.test('other signing algorithms from the provider', async (t) => {
  for (const alg of ['ES256', 'EdDSA', 'PS256'] satisfies IdpAlgorithm[]) {
    await t.test(alg, async (t) => {
      const idp = await startIdp({ alg })
      t.teardown(() => idp.close())
      const set = makeSet(t, options({ issuer: idp.issuer, discovery: true, algorithms: [alg], timers: new FakeTime().timers }))
      set.start()
      await set.whenSettled()
      const token = await idp.issueToken()
      const { header } = decode(token)
      t.same(header, { alg, typ: 'at+jwt', kid: idp.currentKey.kid })
      t.ok(verifierFor(set, idp.currentKey.kid, alg, idp.issuer)(token))
      t.equal(set.key(idp.currentKey.kid, 'RS256'), undefined, 'not for an algorithm that is not pinned')
    })
  }
})
