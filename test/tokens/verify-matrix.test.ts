import t from 'tap'
import { createHmac, createPrivateKey, createPublicKey, sign as cryptoSign } from 'node:crypto'
import { startUpstream } from '../fixtures/upstream.js'
import { AUDIENCE, ISSUER, baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'

// Every row is an attack or a malformed credential: each must be refused with the right
// status and code, and the recording upstream must receive nothing at all.

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url')

function unsigned (alg: string, payload: unknown): string {
  return `${b64({ alg, typ: 'at+jwt', kid: 'k1' })}.${b64(payload)}.`
}

/** HS256 by hand, so any byte string (a public key!) can be the secret */
function hs256 (secret: string | Buffer, payload: unknown, header: Record<string, unknown> = {}): string {
  const input = `${b64({ alg: 'HS256', typ: 'at+jwt', kid: 'k1', ...header })}.${b64(payload)}`
  return `${input}.${createHmac('sha256', secret).update(input).digest('base64url')}`
}

/** EdDSA by hand with any header, so attacker-chosen headers (jwk, jku, x5c) can be tested */
function eddsa (key: TestKey, payload: unknown, header: Record<string, unknown>): string {
  const input = `${b64({ alg: 'EdDSA', typ: 'at+jwt', ...header })}.${b64(payload)}`
  return `${input}.${cryptoSign(null, Buffer.from(input), createPrivateKey(key.privatePem)).toString('base64url')}`
}

interface Row { name: string, token: () => string, status: number, code: string, header?: string }

const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'

/**
 * The same token, segment `index` spelled another way that decodes to the same bytes: a bit
 * that decodes to nothing set in its last character, or (a length that is a multiple of 4)
 * one character more that decodes to nothing.
 */
function respell (token: string, index: number): string {
  const parts = token.split('.')
  const segment = parts[index]!
  const value = ALPHABET.indexOf(segment.at(-1)!)
  parts[index] = segment.length % 4 === 0 ? segment + 'A' : segment.slice(0, -1) + ALPHABET[value | 1]
  const same = Buffer.from(parts[index]!, 'base64url').equals(Buffer.from(segment, 'base64url'))
  if (!same || parts[index] === segment) throw new Error('respell: not another spelling of the same bytes')
  return parts.join('.')
}

t.test('EdDSA gateway refuses every forged or malformed token', async (t) => {
  const key = makeKey('EdDSA')
  const attacker = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } }]))
  const now = Math.floor(Date.now() / 1000)
  const jwkOfAttacker = createPublicKey(attacker.publicPem).export({ format: 'jwk' })

  const rows: Row[] = [
    ...['none', 'None', 'NONE', 'nOnE'].map((alg): Row => ({ name: `alg ${alg}`, token: () => unsigned(alg, goodClaims()), status: 401, code: 'token_invalid_algorithm' })),
    { name: 'HS256 signed with the public key PEM', token: () => hs256(key.publicPem, goodClaims()), status: 401, code: 'token_invalid_algorithm' },
    { name: 'HS256 signed with the public key as JWK', token: () => hs256(JSON.stringify(createPublicKey(key.publicPem).export({ format: 'jwk' })), goodClaims()), status: 401, code: 'token_invalid_algorithm' },
    { name: 'another key with the right kid', token: () => signWith(attacker, goodClaims()), status: 401, code: 'token_invalid_signature' },
    { name: 'attacker key embedded as jwk header', token: () => eddsa(attacker, goodClaims(), { kid: 'k1', jwk: jwkOfAttacker }), status: 401, code: 'token_invalid_signature' },
    { name: 'jku header pointing elsewhere', token: () => eddsa(attacker, goodClaims(), { kid: 'k1', jku: 'http://127.0.0.1:1/jwks.json' }), status: 401, code: 'token_invalid_signature' },
    { name: 'x5c header with attacker material', token: () => eddsa(attacker, goodClaims(), { kid: 'k1', x5c: ['MIIB'] }), status: 401, code: 'token_invalid_signature' },
    { name: 'unknown kid', token: () => signWith(key, goodClaims(), { kid: 'k9' }), status: 401, code: 'token_unknown_key' },
    { name: 'expired', token: () => signWith(key, goodClaims({ iat: now - 700, exp: now - 100 })), status: 401, code: 'token_expired', header: 'expired' },
    { name: 'nbf in the future', token: () => signWith(key, goodClaims({ nbf: now + 120 })), status: 401, code: 'token_not_yet_valid' },
    { name: 'iat in the future', token: () => signWith(key, goodClaims({ iat: now + 120, exp: now + 600 })), status: 401, code: 'token_issued_in_future' },
    { name: 'lifetime longer than accepted', token: () => signWith(key, goodClaims({ exp: now + 86_400 })), status: 401, code: 'token_lifetime_too_long' },
    { name: 'wrong iss', token: () => signWith(key, goodClaims({ iss: 'https://evil.test' })), status: 401, code: 'token_invalid_issuer' },
    { name: 'iss as an array', token: () => signWith(key, goodClaims({ iss: [ISSUER, 'https://evil.test'] })), status: 401, code: 'token_invalid_issuer' },
    { name: 'wrong aud', token: () => signWith(key, goodClaims({ aud: 'other.test' })), status: 401, code: 'token_invalid_audience' },
    { name: 'aud array without ours', token: () => signWith(key, goodClaims({ aud: ['a.test', 'b.test'] })), status: 401, code: 'token_invalid_audience' },
    { name: 'unknown crit header', token: () => signWith(key, goodClaims(), { crit: ['x-must-understand'], 'x-must-understand': 1 }), status: 401, code: 'token_unsupported_crit' },
    // RFC 7515 §4.1.11: crit is a non-empty array of names; fast-jwt let falsy values through (fix-crit-falsy)
    { name: 'crit ""', token: () => signWith(key, goodClaims(), { crit: '' }), status: 401, code: 'token_unsupported_crit' },
    { name: 'crit false', token: () => signWith(key, goodClaims(), { crit: false }), status: 401, code: 'token_unsupported_crit' },
    { name: 'crit 0', token: () => signWith(key, goodClaims(), { crit: 0 }), status: 401, code: 'token_unsupported_crit' },
    { name: 'crit []', token: () => signWith(key, goodClaims(), { crit: [] }), status: 401, code: 'token_unsupported_crit' },
    { name: 'crit null', token: () => signWith(key, goodClaims(), { crit: null }), status: 401, code: 'token_unsupported_crit' },
    { name: 'typ JWT (an ID token, not an access token)', token: () => signWith(key, goodClaims(), { typ: 'JWT' }), status: 401, code: 'token_invalid_type' },
    { name: 'no typ', token: () => signWith(key, goodClaims(), { typ: undefined }), status: 401, code: 'token_invalid_type' },
    { name: 'missing jti', token: () => signWith(key, goodClaims({ jti: undefined })), status: 401, code: 'token_missing_claim' },
    { name: 'missing sub', token: () => signWith(key, goodClaims({ sub: undefined })), status: 401, code: 'token_missing_claim' },
    { name: 'missing exp', token: () => signWith(key, goodClaims({ exp: undefined })), status: 401, code: 'token_missing_claim' },
    { name: 'missing iat', token: () => signWith(key, goodClaims({ iat: undefined })), status: 401, code: 'token_missing_claim' },
    { name: 'exp not a number', token: () => signWith(key, goodClaims({ exp: 'tomorrow' })), status: 401, code: 'token_invalid_claim' },
    { name: 'scope as an array', token: () => signWith(key, goodClaims({ scope: ['orders:read'] })), status: 401, code: 'token_invalid_claim' },
    { name: 'sub with CR LF', token: () => signWith(key, goodClaims({ sub: 'alice\r\nx-user-admin: 1' })), status: 401, code: 'token_invalid_claim' },
    { name: 'sub with NUL', token: () => signWith(key, goodClaims({ sub: 'alice\u0000' })), status: 401, code: 'token_invalid_claim' },
    { name: 'payload is an array', token: () => eddsa(key, [goodClaims()], { kid: 'k1' }), status: 401, code: 'token_malformed' },
    { name: 'two segments', token: () => signWith(key, goodClaims()).split('.').slice(0, 2).join('.'), status: 401, code: 'token_malformed' },
    { name: 'four segments', token: () => signWith(key, goodClaims()) + '.AAAA', status: 401, code: 'token_malformed' },
    { name: 'header not JSON', token: () => `${b64('{{{')}.${b64(goodClaims())}.AAAA`, status: 401, code: 'token_malformed' },
    { name: 'header is an array', token: () => `${b64([1])}.${b64(goodClaims())}.AAAA`, status: 401, code: 'token_malformed' },
    { name: 'garbage', token: () => 'abc', status: 401, code: 'token_malformed' },
    // one token, one spelling (fix-token-one-spelling): bits that decode to nothing gave a
    // signed token up to 16 texts that all verified
    { name: 'signature spelled another way (same bytes)', token: () => respell(signWith(key, goodClaims()), 2), status: 401, code: 'token_malformed' },
    { name: 'payload spelled another way (same bytes)', token: () => respell(signWith(key, goodClaims({ pad: 'x' })), 1), status: 401, code: 'token_malformed' },
    { name: 'payload spelled another way, 2 bytes past a multiple of 3', token: () => respell(signWith(key, goodClaims({ pad: 'xy' })), 1), status: 401, code: 'token_malformed' },
    { name: 'payload spelled another way, a character too many', token: () => respell(signWith(key, goodClaims({ pad: '' })), 1), status: 401, code: 'token_malformed' },
    { name: 'header spelled another way (same bytes)', token: () => respell(signWith(key, goodClaims()), 0), status: 401, code: 'token_malformed' },
    { name: 'oversized (> 8 KiB)', token: () => signWith(key, goodClaims({ pad: 'x'.repeat(9000) })), status: 401, code: 'token_too_large' },
    { name: 'scope missing for the route', token: () => signWith(key, goodClaims({ scope: 'orders:write' })), status: 403, code: 'insufficient_scope' },
  ]

  for (const row of rows) {
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${row.token()}` } })
    const body = res.json()
    t.equal(res.status, row.status, `${row.name}: status`)
    t.equal(body.code, row.code, `${row.name}: code`)
    const challenge = String(res.headers['www-authenticate'])
    if (row.status === 401) {
      t.match(challenge, /^Bearer realm="portcullis", error="invalid_token", error_description="[^"]+"$/, `${row.name}: challenge`)
      t.equal(body.error, 'invalid_token', `${row.name}: error`)
    } else {
      t.equal(challenge, 'Bearer realm="portcullis", error="insufficient_scope", scope="orders:read"', `${row.name}: challenge`)
    }
    if (row.header !== undefined) t.match(challenge, row.header, `${row.name}: description says ${row.header}`)
    t.notMatch(res.body, /at .*\.(ts|js):\d+/, `${row.name}: no stack trace`)
  }
  t.equal(upstream.requests.length, 0, 'the upstream received none of the refused requests')

  // credentials problems that are not a token
  const none = await raw(gw.url, '/api/x')
  t.equal(none.status, 401)
  t.equal(none.json().code, 'missing_token')
  t.equal(none.headers['www-authenticate'], 'Bearer realm="portcullis"', 'no error attribute without credentials (RFC 6750 §3.1)')
  const basic = await raw(gw.url, '/api/x', { headers: { authorization: 'Basic YWxpY2U6cHc=' } })
  t.equal(basic.status, 401, 'another scheme is not a bearer token')
  t.equal(basic.json().code, 'missing_token')
  for (const header of ['Bearer', 'Bearer ', 'Bearer a b', 'Bearer ä', 'bearer\ttoken']) {
    const res = await raw(gw.url, '/api/x', { headers: { authorization: header } })
    t.equal(res.status, header === 'bearer\ttoken' ? 401 : 400, `malformed header ${JSON.stringify(header)}`)
  }
  const malformed = await raw(gw.url, '/api/x', { headers: { authorization: 'Bearer a b' } })
  t.equal(malformed.json().code, 'malformed_authorization')
  t.match(String(malformed.headers['www-authenticate']), /error="invalid_request"/)
  t.equal(upstream.requests.length, 0, 'the upstream still received nothing')

  // and the positive controls: the scheme is case-insensitive, aud may be an array containing ours
  for (const [name, token] of [
    ['lower-case scheme', `bearer ${signWith(key, goodClaims())}`],
    ['aud array with ours', `Bearer ${signWith(key, goodClaims({ aud: ['other.test', AUDIENCE] }))}`],
    ['nbf within skew', `BEARER ${signWith(key, goodClaims({ nbf: now + 10 }))}`],
    ['expired within skew', `Bearer ${signWith(key, goodClaims({ iat: now - 600, exp: now - 10 }))}`],
  ] as const) {
    const res = await raw(gw.url, '/api/x', { headers: { authorization: token } })
    t.equal(res.status, 200, name)
  }
  t.equal(upstream.requests.length, 4, 'only the valid tokens reached the upstream')
})

t.test('RS256 gateway refuses HS256 tokens keyed with its public key (PEM, PKCS#1, JWK)', async (t) => {
  const key = makeKey('RS256')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const pub = createPublicKey(key.publicPem)
  for (const [name, secret] of [
    ['SPKI PEM', key.publicPem],
    ['PKCS#1 PEM', pub.export({ type: 'pkcs1', format: 'pem' }).toString()],
    ['JWK', JSON.stringify(pub.export({ format: 'jwk' }))],
  ] as const) {
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${hs256(secret, goodClaims())}` } })
    t.equal(res.status, 401, name)
    t.equal(res.json().code, 'token_invalid_algorithm', name)
  }
  const ok = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(key, goodClaims())}` } })
  t.equal(ok.status, 200, 'a real RS256 token passes')
  t.equal(upstream.requests.length, 1)
})

t.test('ES256 gateway refuses an all-zero signature (CVE-2022-21449)', async (t) => {
  const key = makeKey('ES256')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const input = `${b64({ alg: 'ES256', typ: 'at+jwt', kid: 'k1' })}.${b64(goodClaims())}`
  const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${input}.${Buffer.alloc(64).toString('base64url')}` } })
  t.equal(res.status, 401)
  t.equal(res.json().code, 'token_invalid_signature')
  t.equal(upstream.requests.length, 0)
})

t.test('every algorithm verifies its own tokens; several keys all verify (rotation)', async (t) => {
  for (const alg of ['EdDSA', 'ES256', 'RS256', 'PS256', 'HS256'] as const) {
    const key = makeKey(alg, 'new')
    const old = makeKey(alg, 'old')
    const upstream = await startUpstream()
    t.teardown(() => upstream.close())
    const oldEntry = alg === 'HS256' ? { kid: 'old', secret: old.privatePem } : { kid: 'old', publicKey: old.publicPem }
    const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], { extraKeys: [oldEntry] }))
    const fresh = gw.gateway.runtime.signer.sign({ sub: 'bob', scope: ['a'] })
    t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${fresh.token}` } })).status, 200, `${alg}: token from the signing key`)
    t.equal((await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(old, goodClaims())}` } })).status, 200, `${alg}: token from the old key`)
    const jwks = await raw(gw.url, '/.well-known/jwks.json')
    const keys = jwks.json().keys as Array<Record<string, unknown>>
    if (alg === 'HS256') t.same(keys, [], 'HS256: no keys published')
    else {
      t.same(keys.map(k => k.kid), ['new', 'old'], `${alg}: both public keys published`)
      t.notOk(keys.some(k => 'd' in k || 'p' in k), `${alg}: no private material in the JWKS`)
    }
    await gw.close()
    await upstream.close()
  }
})
