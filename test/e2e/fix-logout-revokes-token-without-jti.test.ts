import t from 'tap'
import { createPublicKey } from 'node:crypto'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { AUDIENCE, baseConfig, makeKey, raw, signWith, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'
import { startJwksServer } from '../tokens/issuers/helpers.js'
import { openStore } from '../../src/sessions/store.js'

// fix-logout-revokes-token-without-jti: an identity provider's access token without a `jti`
// (Auth0's default token profile, Microsoft Entra ID — they carry none, or `uti`) could not be
// revoked at all. /auth/logout with it answered 204 and revoked nothing: the token went on
// opening every route until its `exp`, on every replica. An operator had no way to cut off
// such a token once leaked either: /admin/revocations/jti needs a jti.
// Now such a token's revocation key is its signed text (`header.payload`, hashed): a logout
// revokes exactly that token, and POST /admin/revocations/token takes a leaked token whole.
// Keyed by the signed text, not the whole token: an ECDSA signature has a second value that
// verifies (s and n − s), so a key on the whole text let the same token through under its
// other signature.
// Real parts: a gateway on 127.0.0.1, a real JWKS server for the provider's key, the
// embedded store, a recording upstream.

const partner = 'https://idp-without-jti.test'
const ADMIN_TOKEN = 'b'.repeat(40)
/** the order of P-256's base point (SEC 2) */
const P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551n

/** the same signed text with the ECDSA signature's other valid value: (r, n − s) */
function otherSignature (jwt: string): string {
  const dot = jwt.lastIndexOf('.')
  const sig = Buffer.from(jwt.slice(dot + 1), 'base64url')
  const s = BigInt('0x' + sig.subarray(32).toString('hex'))
  const flipped = Buffer.from((P256_N - s).toString(16).padStart(64, '0'), 'hex')
  return jwt.slice(0, dot + 1) + Buffer.concat([sig.subarray(0, 32), flipped]).toString('base64url')
}

t.test('an identity provider\'s token without jti is revoked by logout and by the admin API', async (t) => {
  const key = makeKey('EdDSA')
  const idpKey = makeKey('ES256')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const jwks = await startJwksServer()
  t.teardown(() => jwks.close())
  jwks.jwks = { keys: [{ ...createPublicKey(idpKey.publicPem).export({ format: 'jwk' }), kid: idpKey.kid, alg: 'ES256', use: 'sig' }] }
  const store = await openStore({ dataDir: 'memory://' })
  let logs = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { logs += String(chunk); done() } }))
  const gw = await startGateway(t, {
    ...baseConfig(key, [
      { name: 'partner', prefix: '/partner', upstream: upstream.url, auth: 'required', issuers: ['partner'] },
    ], { tokens: { refresh: { transport: 'both' } }, admin: { token: ADMIN_TOKEN } }),
    issuers: [{ name: 'partner', issuer: partner, jwksUri: jwks.jwksUrl, audiences: [AUDIENCE], algorithms: ['ES256'] }],
  }, { store, logger })
  await until('the partner issuer ready', async () => {
    const r = await raw(gw.adminUrl, '/readyz')
    return r.status === 200 && !r.body.includes('"state":"degraded"')
  })
  const post = async (base: string, path: string, body: unknown, headers: Record<string, string> = {}): Promise<RawResponse> =>
    await raw(base, path, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) })
  const get = async (token: string): Promise<RawResponse> => await raw(gw.url, '/partner/x', { headers: { authorization: `Bearer ${token}` } })
  const now = Math.floor(Date.now() / 1000)
  let n = 0
  // no jti: two tokens of one user differ only in the claims their issuer varies (here iat)
  const partnerToken = (claims: Record<string, unknown> = {}): string =>
    signWith(idpKey, { iss: partner, aud: AUDIENCE, sub: 'partner-user', iat: now - n++, exp: now + 300, ...claims })
  const revokeToken = async (body: unknown, auth = ADMIN_TOKEN): Promise<RawResponse> =>
    await post(gw.adminUrl, '/admin/revocations/token', body, { authorization: `Bearer ${auth}` })

  t.test('logout with the token revokes that token, and only it', async (t) => {
    const mine = partnerToken()
    const sibling = partnerToken()
    const malleated = otherSignature(mine)
    t.not(malleated, mine, 'a second spelling of the same signed text')
    // three uses: verified, admitted to the verify cache, served from it
    for (let i = 0; i < 3; i++) t.equal((await get(mine)).status, 200, 'the token opens its route')
    t.equal((await get(malleated)).status, 200, 'so does its other signature (ECDSA: s and n − s both verify)')
    const out = await post(gw.url, '/auth/logout', {}, { authorization: `Bearer ${mine}` })
    t.equal(out.status, 204, 'the logout is accepted')
    await until('the logged-out token refused', async () => (await get(mine)).status === 401)
    t.equal((await get(mine)).json().code, 'token_revoked', 'the logged-out token is revoked (it passed before the fix)')
    t.equal((await get(malleated)).json().code, 'token_revoked', 'under its other signature too')
    t.equal((await get(sibling)).status, 200, 'another token of the same user and issuer is untouched')
  })

  t.test('POST /admin/revocations/token cuts off a leaked token', async (t) => {
    const leaked = partnerToken()
    const other = partnerToken()
    t.equal((await get(leaked)).status, 200)
    t.equal((await get(leaked)).status, 200, 'cached')
    const res = await revokeToken({ token: leaked })
    t.equal(res.status, 204, res.body)
    await until('the leaked token refused', async () => (await get(leaked)).status === 401)
    t.equal((await get(leaked)).json().code, 'token_revoked')
    t.equal((await get(other)).status, 200, 'the provider\'s other tokens still pass')
    t.equal((await revokeToken({ token: leaked })).status, 204, 'repeating it is not an error')
    const withJti = partnerToken({ jti: 'partner-jti-1' })
    t.equal((await get(withJti)).status, 200)
    t.equal((await revokeToken({ token: withJti })).status, 204, 'a token with a jti is revoked by it')
    await until('the token with a jti refused', async () => (await get(withJti)).status === 401)
    t.equal((await get(partnerToken({ jti: 'partner-jti-1', sub: 'someone' }))).json().code, 'token_revoked',
      'by its jti under its issuer, as /admin/revocations/jti does')
    t.notOk(logs.includes(leaked.split('.')[1] as string), 'the token is never logged')
    t.match(logs, /"action":"revoke_token"[^\n]*"target":"iss-tok:/, 'the admin_action event names the revocation key')
  })

  t.test('bad requests to /admin/revocations/token are 400s and revoke nothing', async (t) => {
    const victim = partnerToken()
    const bad: Array<[string, unknown]> = [
      ['not a JWT', { token: 'not-a-jwt' }],
      ['two segments', { token: victim.split('.').slice(0, 2).join('.') }],
      ['a payload that is not JSON', { token: `${victim.split('.')[0]}.${Buffer.from('{"exp":').toString('base64url')}.c2ln` }],
      ['no exp', { token: signWith(idpKey, { iss: partner, sub: 'x' }) }],
      ['exp after 2100', { token: signWith(idpKey, { iss: partner, sub: 'x', exp: 5_000_000_000 }) }],
      ['no iss', { token: signWith(idpKey, { sub: 'x', exp: now + 60 }) }],
      ['a jti with a NUL', { token: signWith(idpKey, { iss: partner, sub: 'x', exp: now + 60, jti: 'a\u0000b' }) }],
      ['a number for a jti', { token: signWith(idpKey, { iss: partner, sub: 'x', exp: now + 60, jti: 7 }) }],
      ['no token', {}],
      ['a token that is not a string', { token: 5 }],
    ]
    for (const [what, body] of bad) {
      const res = await revokeToken(body)
      t.equal(res.status, 400, `${what}: 400`)
      t.equal(res.json().code, 'bad_request', `${what}: bad_request`)
    }
    t.equal((await revokeToken({ token: victim }, 'wrong-admin-token-wrong-admin-token-0000')).status, 401, 'the admin token is required')
    t.equal((await get(victim)).status, 200, 'none of them revoked the token')
  })
})
