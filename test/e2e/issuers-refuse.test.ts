import t from 'tap'
import { baseConfig, ISSUER, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'
import { ConfigError } from '../../src/errors.js'
import { getWith, idpClaims, idpKey, signAsIdp, startIdpGateway, startTripwire } from '../upstream/helpers.js'

// Identity in, the refusing side: every way an IdP-looking token can be wrong gets 401 with a
// stable code and never reaches the upstream. Key choice never comes from the token: a
// `jku`/`x5u`/`jwk`/`x5c` header is never followed (a listener counts connections to prove it).

const key = makeKey('EdDSA')

t.test('refused: wrong iss, aud, alg, HS256 keyed with the public key, unknown kid, jku/x5u/jwk/x5c, typ', async (t) => {
  const { idp, upstream, gw } = await startIdpGateway(t, key, { idp: { alg: 'RS256' }, issuer: { algorithms: ['RS256'] } })
  const tripwire = await startTripwire()
  t.teardown(() => tripwire.close())
  // past the unknown-kid cooldown (1s), so the unknown-kid row below does cause its refetch
  await new Promise(resolve => setTimeout(resolve, 1_100))

  const k = idpKey(idp)
  const pubJwk = k.publicKey!.export({ format: 'jwk' })
  const attacker = makeKey('RS256', k.kid) // same kid as the IdP's key, another key
  const attackerJwk = { ...attacker.publicKey!.export({ format: 'jwk' }), kid: k.kid, alg: 'RS256', use: 'sig' }
  const stranger = makeKey('RS256', 'kid-nobody-published')
  const ps = { ...k, alg: 'PS256' as const }
  const es = makeKey('ES256', k.kid)
  const hmac = (secret: string): TestKey => ({ alg: 'HS256', kid: k.kid, privatePem: secret, publicPem: secret })
  const c = (o: Record<string, unknown> = {}): Record<string, unknown> => idpClaims(idp, o)
  const nowSec = Math.floor(Date.now() / 1000)

  const rows: Array<{ name: string, token: () => string | Promise<string>, code: string }> = [
    { name: 'the control: a good token', token: () => signAsIdp(idp), code: '' },
    { name: 'iss of no configured issuer', token: () => signAsIdp(idp, { iss: 'https://evil.example.test' }), code: 'token_invalid_issuer' },
    { name: 'iss with a trailing slash (exact match only)', token: () => signAsIdp(idp, { iss: `${idp.issuer}/` }), code: 'token_invalid_issuer' },
    { name: 'iss pointing at a listener (never contacted)', token: () => signAsIdp(idp, { iss: tripwire.url }), code: 'token_invalid_issuer' },
    { name: "iss of the gateway itself, signed with the IdP's key", token: () => signAsIdp(idp, { iss: ISSUER }), code: 'token_invalid_algorithm' },
    { name: 'no iss', token: () => signAsIdp(idp, { iss: undefined }), code: 'token_invalid_issuer' },
    { name: 'aud of another resource (from the IdP itself)', token: () => idp.issueToken({ resource: 'https://other.example.test' }), code: 'token_invalid_audience' },
    // regression: fast-jwt checks allowedAud only when aud is present; a token without aud passed
    { name: 'no aud (fix: aud was not a required claim of external issuers)', token: () => signAsIdp(idp, { aud: undefined }), code: 'token_missing_claim' },
    { name: 'aud an empty array', token: () => signAsIdp(idp, { aud: [] }), code: 'token_invalid_audience' },
    { name: 'aud an array without ours', token: () => signAsIdp(idp, { aud: ['https://a.test', 'https://b.test'] }), code: 'token_invalid_audience' },
    { name: 'PS256 with the IdP key (alg not pinned)', token: () => signWith(ps, c()), code: 'token_invalid_algorithm' },
    { name: 'ES256 (alg not pinned)', token: () => signWith(es, c()), code: 'token_invalid_algorithm' },
    { name: 'alg none', token: () => `${b64({ alg: 'none', typ: 'at+jwt', kid: k.kid })}.${b64(c())}.`, code: 'token_invalid_algorithm' },
    { name: "HS256 keyed with the IdP's public key (PEM)", token: () => signWith(hmac(k.publicPem), c()), code: 'token_invalid_algorithm' },
    { name: "HS256 keyed with the IdP's public key (PEM, no newline at the end)", token: () => signWith(hmac(k.publicPem.trim()), c()), code: 'token_invalid_algorithm' },
    { name: "HS256 keyed with the IdP's public key (JWK JSON)", token: () => signWith(hmac(JSON.stringify(pubJwk)), c()), code: 'token_invalid_algorithm' },
    { name: "HS256 keyed with the IdP's public key (JWK n)", token: () => signWith(hmac(String(pubJwk.n)), c()), code: 'token_invalid_algorithm' },
    { name: 'unknown kid', token: () => signWith(stranger, c()), code: 'token_unknown_key' },
    { name: "the IdP's kid, another key", token: () => signWith(attacker, c()), code: 'token_invalid_signature' },
    { name: 'jku at a listener, kid of the IdP', token: () => signWith(attacker, c(), { jku: `${tripwire.url}/jwks.json` }), code: 'token_invalid_signature' },
    { name: 'jku at a listener, kid unknown', token: () => signWith({ ...attacker, kid: 'jku-kid' }, c(), { jku: `${tripwire.url}/jwks.json` }), code: 'token_unknown_key' },
    { name: 'x5u at a listener', token: () => signWith(attacker, c(), { x5u: `${tripwire.url}/cert.pem` }), code: 'token_invalid_signature' },
    { name: 'jwk embedded in the header', token: () => signWith(attacker, c(), { jwk: attackerJwk }), code: 'token_invalid_signature' },
    { name: 'jwk embedded, no kid', token: () => signWith({ ...attacker, kid: undefined as unknown as string }, c(), { jwk: attackerJwk, kid: undefined }), code: 'token_invalid_signature' },
    { name: 'x5c in the header', token: () => signWith(attacker, c(), { x5c: [attacker.publicKey!.export({ type: 'spki', format: 'der' }).toString('base64')] }), code: 'token_invalid_signature' },
    { name: 'typ JWT (not opted in)', token: () => signAsIdp(idp, {}, { typ: 'JWT' }), code: 'token_invalid_type' },
    { name: 'no typ', token: () => signAsIdp(idp, {}, { typ: undefined }), code: 'token_invalid_type' },
    { name: "typ of the gateway's assertion", token: () => signAsIdp(idp, {}, { typ: 'portcullis-assertion+jwt' }), code: 'token_invalid_type' },
    { name: 'expired', token: () => signAsIdp(idp, { iat: nowSec - 600, exp: nowSec - 300 }), code: 'token_expired' },
    { name: 'no exp', token: () => signAsIdp(idp, { exp: undefined }), code: 'token_missing_claim' },
    { name: 'issued in the future', token: () => signAsIdp(idp, { iat: nowSec + 3600, exp: nowSec + 3900 }), code: 'token_issued_in_future' },
    { name: 'lives longer than maxTokenLifetime (24h)', token: () => signAsIdp(idp, { exp: nowSec + 2 * 86_400 }), code: 'token_lifetime_too_long' },
    { name: 'unknown crit header', token: () => signAsIdp(idp, {}, { crit: ['exp-ext'], 'exp-ext': 1 }), code: 'token_unsupported_crit' },
    { name: 'crit ""', token: () => signAsIdp(idp, {}, { crit: '' }), code: 'token_unsupported_crit' },
    { name: 'crit false', token: () => signAsIdp(idp, {}, { crit: false }), code: 'token_unsupported_crit' },
    { name: 'crit []', token: () => signAsIdp(idp, {}, { crit: [] }), code: 'token_unsupported_crit' },
  ]
  for (const row of rows) {
    const res = await getWith(gw.url, '/api/x', await row.token())
    if (row.code === '') {
      t.equal(res.status, 200, `${row.name}: 200 (${res.body})`)
      continue
    }
    t.equal(res.status, 401, `${row.name}: 401`)
    t.equal(res.json().code, row.code, `${row.name}: ${row.code}`)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/, `${row.name}: invalid_token`)
  }
  t.equal(upstream.requests.length, 1, 'only the control reached the upstream')
  // anything the gateway might start in the background has had time to connect
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(tripwire.connections(), 0, 'the listener named by jku / x5u / iss never got a connection')
  t.ok((idp.hits.get('/jwks') ?? 0) <= 2, `JWKS fetched at most twice (start + one unknown-kid refetch): ${idp.hits.get('/jwks')}`)
})

t.test('typ JWT is accepted when the issuer opts in; at+jwt stays accepted', async (t) => {
  const { idp, gw } = await startIdpGateway(t, key, { issuer: { typ: ['at+jwt', 'JWT'] } })
  for (const typ of ['JWT', 'jwt', 'at+jwt', 'application/at+jwt']) {
    t.equal((await getWith(gw.url, '/api/x', signAsIdp(idp, {}, { typ }))).status, 200, `typ ${typ}`)
  }
  const none = await getWith(gw.url, '/api/x', signAsIdp(idp, {}, { typ: undefined }))
  t.equal(none.json().code, 'token_invalid_type', 'a token without typ is still refused')
  t.equal((await getWith(gw.url, '/api/x', await idp.issueToken())).status, 200)
})

t.test('HS256 can never be pinned for an identity provider (config refused)', async (t) => {
  for (const algorithms of [['HS256'], ['RS256', 'HS256'], ['none']]) {
    const config = {
      ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]),
      issuers: [{ name: 'corp', issuer: 'https://idp.example.test', jwksUri: 'https://idp.example.test/keys', audiences: ['api'], algorithms }],
    }
    await t.rejects(startGateway(t, config), ConfigError, `algorithms ${algorithms.join(',')} refused at boot`)
  }
})

function b64 (v: unknown): string {
  return Buffer.from(JSON.stringify(v)).toString('base64url')
}
