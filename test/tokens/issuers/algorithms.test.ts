import t from 'tap'
import { createPublicKey, createSecretKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import { ALLOWED_ALGORITHMS, checkKeyForAlgorithm, KeyRejection } from '../../../src/tokens/issuers/algorithms.js'
import { parseJwks, thumbprint } from '../../../src/tokens/issuers/jwks.js'
import { freshnessSec, remoteUrlProblem } from '../../../src/tokens/issuers/fetch.js'
import { discoveryUrl } from '../../../src/tokens/issuers/discovery.js'
import { IssuerKeysErrorCode } from '../../../src/tokens/issuers/errors.js'
import { checkRemoteKeySetOptions, REMOTE_KEY_SET_DEFAULTS } from '../../../src/tokens/issuers/options.js'
import { keyPair, publicJwk } from './helpers.js'

const rsa = keyPair('RSA')
const rsa1024 = keyPair('RSA1024')
const p256 = keyPair('P-256')
const p384 = keyPair('P-384')
const p521 = keyPair('P-521')
const ed25519 = keyPair('Ed25519')
const ed448 = keyPair('Ed448')
// node cannot tell a modulus from any odd number, so an oversized "RSA key" needs no slow keygen
const hugeModulus = randomBytes(1025)
hugeModulus.writeUInt8(hugeModulus.readUInt8(0) | 0x80, 0)
hugeModulus.writeUInt8(hugeModulus.readUInt8(1024) | 1, 1024)
const rsa8200 = createPublicKey({ key: { kty: 'RSA', n: hugeModulus.toString('base64url'), e: 'AQAB' }, format: 'jwk' })
const rsaPss = generateKeyPairSync('rsa-pss', { modulusLength: 2048 })

t.test('the allowed list is asymmetric only', async (t) => {
  t.same([...ALLOWED_ALGORITHMS], ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'])
  for (const alg of ALLOWED_ALGORITHMS) t.notMatch(alg, /^HS|none/i)
})

t.test('checkKeyForAlgorithm: key type must match the algorithm (KeyObject and JWK alike)', async (t) => {
  type Row = [name: string, key: KeyObject | JsonWebKey, alg: string, expected: true | KeyRejection]
  const rows: Row[] = [
    ['RSA 2048 for RS256', rsa.publicKey, 'RS256', true],
    ['RSA 2048 for RS512', rsa.publicKey, 'RS512', true],
    ['RSA 2048 for PS256', rsa.publicKey, 'PS256', true],
    ['RSA-PSS SPKI key for PS384', rsaPss.publicKey, 'PS384', true],
    ['RSA-PSS SPKI key refused for RS256', rsaPss.publicKey, 'RS256', KeyRejection.keyTypeMismatch],
    ['RSA 1024 refused', rsa1024.publicKey, 'RS256', KeyRejection.rsaTooSmall],
    ['RSA 8200 refused (verify cost)', rsa8200, 'RS256', KeyRejection.rsaTooLarge],
    ['P-256 for ES256', p256.publicKey, 'ES256', true],
    ['P-384 for ES384', p384.publicKey, 'ES384', true],
    ['P-521 for ES512', p521.publicKey, 'ES512', true],
    ['P-384 refused for ES256', p384.publicKey, 'ES256', KeyRejection.curveMismatch],
    ['P-256 refused for ES512', p256.publicKey, 'ES512', KeyRejection.curveMismatch],
    ['Ed25519 for EdDSA', ed25519.publicKey, 'EdDSA', true],
    ['Ed448 refused for EdDSA', ed448.publicKey, 'EdDSA', KeyRejection.keyTypeMismatch],
    ['RSA refused for ES256', rsa.publicKey, 'ES256', KeyRejection.keyTypeMismatch],
    ['EC refused for RS256', p256.publicKey, 'RS256', KeyRejection.keyTypeMismatch],
    ['Ed25519 refused for ES256', ed25519.publicKey, 'ES256', KeyRejection.keyTypeMismatch],
    ['EC refused for EdDSA', p256.publicKey, 'EdDSA', KeyRejection.keyTypeMismatch],
    ['HS256 never allowed', rsa.publicKey, 'HS256', KeyRejection.algorithmNotAllowed],
    ['none never allowed', rsa.publicKey, 'none', KeyRejection.algorithmNotAllowed],
    ['ES256K not pinned here', p256.publicKey, 'ES256K', KeyRejection.algorithmNotAllowed],
    ['a private KeyObject refused', rsa.privateKey, 'RS256', KeyRejection.privateKeyMaterial],
    ['a secret KeyObject refused', createSecretKey(Buffer.alloc(32, 1)), 'RS256', KeyRejection.keyTypeMismatch],
    // JWKs
    ['JWK RSA for RS256', publicJwk(rsa), 'RS256', true],
    ['JWK with alg RS256 for RS256', publicJwk(rsa, { alg: 'RS256' }), 'RS256', true],
    ['JWK with alg PS256 refused for RS256', publicJwk(rsa, { alg: 'PS256' }), 'RS256', KeyRejection.algorithmMismatch],
    ['JWK with alg HS256 refused', publicJwk(rsa, { alg: 'HS256' }), 'RS256', KeyRejection.algorithmNotAllowed],
    ['JWK use sig accepted', publicJwk(p256, { use: 'sig' }), 'ES256', true],
    ['JWK use enc refused', publicJwk(p256, { use: 'enc' }), 'ES256', KeyRejection.notForSignatures],
    ['JWK key_ops [verify] accepted', publicJwk(p256, { key_ops: ['verify'] }), 'ES256', true],
    ['JWK key_ops [encrypt] refused', publicJwk(p256, { key_ops: ['encrypt'] }), 'ES256', KeyRejection.notForSignatures],
    ['JWK with d (private) refused', rsa.privateKey.export({ format: 'jwk' }), 'RS256', KeyRejection.privateKeyMaterial],
    ['JWK EC with d refused', p256.privateKey.export({ format: 'jwk' }), 'ES256', KeyRejection.privateKeyMaterial],
    ['JWK oct refused', { kty: 'oct', k: 'c2VjcmV0' }, 'RS256', KeyRejection.privateKeyMaterial],
    ['JWK oct without k refused', { kty: 'oct' }, 'RS256', KeyRejection.unsupportedKeyType],
    ['JWK unknown kty refused', { kty: 'XYZ', x: 'AA' }, 'EdDSA', KeyRejection.unsupportedKeyType],
    ['JWK EC point not on the curve refused', { ...publicJwk(p256), y: Buffer.alloc(32, 7).toString('base64url') }, 'ES256', KeyRejection.invalidKey],
    ['JWK RSA with a numeric n refused', { kty: 'RSA', n: 12345 as unknown as string, e: 'AQAB' }, 'RS256', KeyRejection.invalidKey],
    ['JWK RSA without e refused', { kty: 'RSA', n: publicJwk(rsa).n }, 'RS256', KeyRejection.invalidKey],
    ['JWK OKP Ed25519 for EdDSA', publicJwk(ed25519), 'EdDSA', true],
    ['JWK RSA 1024 refused', publicJwk(rsa1024), 'RS256', KeyRejection.rsaTooSmall],
    // x5c is never read: a JWK whose n/e are those of key A and whose x5c carries garbage still yields key A
    ['JWK x5c/x5u ignored', publicJwk(rsa, { x5c: ['MIIBgarbage'], x5u: 'https://evil.example/cert', jku: 'https://evil.example/jwks' }), 'RS256', true],
  ]
  for (const [name, key, alg, expected] of rows) {
    const got = checkKeyForAlgorithm(key, alg)
    if (expected === true) {
      t.ok(got.ok, name)
      if (got.ok) t.equal(got.key.type, 'public', `${name}: a public KeyObject`)
    } else {
      t.same(got, { ok: false, reason: expected }, name)
    }
  }
  const fromJwk = checkKeyForAlgorithm(publicJwk(rsa, { x5c: ['MIIBgarbage'] }), 'RS256')
  t.ok(fromJwk.ok && fromJwk.key.equals(rsa.publicKey), 'the key is built from n/e only')
})

t.test('parseJwks keeps good keys, ignores bad ones with a reason, refuses broken documents', async (t) => {
  const pinned = ['RS256', 'PS256', 'ES256'] as const
  const parsed = parseJwks({
    keys: [
      publicJwk(rsa, { kid: 'rsa', use: 'sig' }), // no alg: serves every pinned RSA algorithm
      publicJwk(p256, { kid: 'ec', alg: 'ES256' }),
      publicJwk(ed25519, { kid: 'ed' }), // EdDSA not pinned
      { ...rsa.privateKey.export({ format: 'jwk' }), kid: 'leaked' },
      publicJwk(p256, { kid: 'enc', use: 'enc' }),
      publicJwk(rsa1024, { kid: 'small' }),
      publicJwk(p384, { kid: 'ec', alg: 'ES256' }), // wrong curve
      publicJwk(p256, { kid: 'ec', alg: 'ES256' }), // duplicate (kid, alg)
      publicJwk(rsa, { kid: 'rs384', alg: 'RS384' }), // allowed but not pinned
      'not a key',
      publicJwk(p256, { kid: 42 }),
    ],
  }, pinned, 100)
  t.same(parsed.keys.map(k => [k.kid, k.algorithms]), [['rsa', ['RS256', 'PS256']], ['ec', ['ES256']]])
  t.same(parsed.ignored.map(i => [i.index, i.kid, i.reason]), [
    [2, 'ed', 'key_type_mismatch'],
    [3, 'leaked', 'private_key_material'],
    [4, 'enc', 'not_a_signature_key'],
    [5, 'small', 'rsa_key_too_small'],
    [6, 'ec', 'curve_mismatch'],
    [7, 'ec', 'duplicate_kid'],
    [8, 'rs384', 'algorithm_not_allowed'],
    [9, undefined, 'not_an_object'],
    [10, undefined, 'invalid_kid'],
  ])
  t.equal(parsed.keys[0]!.thumbprint, thumbprint(rsa.publicKey))

  // RFC 7638 §3.1 example
  const rfcKey = createPublicKey({
    key: {
      kty: 'RSA',
      e: 'AQAB',
      n: '0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw',
    },
    format: 'jwk',
  })
  t.equal(thumbprint(rfcKey), 'NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs')

  const refusals: Array<[string, unknown, number, string]> = [
    ['not an object', 'keys', 10, IssuerKeysErrorCode.invalidJwks],
    ['null', null, 10, IssuerKeysErrorCode.invalidJwks],
    ['keys not an array', { keys: {} }, 10, IssuerKeysErrorCode.invalidJwks],
    ['more entries than maxKeys', { keys: [publicJwk(rsa), publicJwk(rsa), publicJwk(rsa)] }, 2, IssuerKeysErrorCode.tooManyKeys],
    ['empty set', { keys: [] }, 10, IssuerKeysErrorCode.noUsableKeys],
    ['only unusable keys', { keys: [publicJwk(p256, { use: 'enc' })] }, 10, IssuerKeysErrorCode.noUsableKeys],
  ]
  for (const [name, doc, maxKeys, code] of refusals) {
    t.throws(() => parseJwks(doc, pinned, maxKeys), { code }, name)
  }
})

t.test('freshnessSec reads Cache-Control max-age minus Age', async (t) => {
  const rows: Array<[string | string[] | undefined, string | undefined, number | undefined]> = [
    [undefined, undefined, undefined],
    ['public, max-age=300', undefined, 300],
    ['max-age="120"', undefined, 120],
    ['Max-Age=60, must-revalidate', undefined, 60],
    ['max-age=300', '100', 200],
    ['max-age=300', '900', 0],
    ['max-age=300, max-age=30', undefined, 30],
    ['no-cache', undefined, 0],
    ['max-age=600, no-store', undefined, 0],
    ['max-age=abc', undefined, undefined],
    ['max-age=-5', undefined, undefined],
    ['private', undefined, undefined],
    [['max-age=50', 'public'], undefined, 50],
  ]
  for (const [cc, age, expected] of rows) t.equal(freshnessSec(cc, age), expected, `${JSON.stringify(cc)} age ${age}`)
})

t.test('remoteUrlProblem: https, or loopback http only when allowed', async (t) => {
  const rows: Array<[string, boolean, boolean]> = [
    ['https://idp.example.test/jwks', false, true],
    ['http://idp.example.test/jwks', false, false],
    ['http://idp.example.test/jwks', true, false],
    ['http://127.0.0.1:8080/jwks', false, false],
    ['http://127.0.0.1:8080/jwks', true, true],
    ['http://127.9.9.9/jwks', true, true],
    ['http://localhost/jwks', true, true],
    ['http://[::1]:9000/jwks', true, true],
    ['http://10.0.0.1/jwks', true, false],
    ['http://127.0.0.1.nip.io/jwks', true, false],
    ['https://user:pw@idp.example.test/jwks', false, false],
    ['file:///etc/passwd', true, false],
    ['ftp://idp.example.test/jwks', false, false],
    ['/relative/jwks', false, false],
  ]
  for (const [url, allow, ok] of rows) t.equal(remoteUrlProblem(url, allow) === undefined, ok, `${url} allowInsecureHttp=${allow}`)
})

t.test('discoveryUrl appends the well-known path after the issuer path (OIDC Discovery §4.1)', async (t) => {
  t.equal(discoveryUrl('https://idp.example.test').href, 'https://idp.example.test/.well-known/openid-configuration')
  t.equal(discoveryUrl('https://idp.example.test/').href, 'https://idp.example.test/.well-known/openid-configuration')
  t.equal(discoveryUrl('https://idp.example.test/realms/main').href, 'https://idp.example.test/realms/main/.well-known/openid-configuration')
})

t.test('checkRemoteKeySetOptions lists every problem with its path', async (t) => {
  const good = { name: 'corp', issuer: 'https://idp.example.test', discovery: true, algorithms: ['RS256'], ...REMOTE_KEY_SET_DEFAULTS }
  t.same(checkRemoteKeySetOptions(good), [])
  t.same(checkRemoteKeySetOptions({ ...good, discovery: false, jwksUri: 'https://idp.example.test/keys' }), [])
  const bad = checkRemoteKeySetOptions({
    ...good,
    name: '',
    issuer: 'http://idp.example.test',
    jwksUri: 'http://idp.example.test/keys',
    algorithms: ['HS256', 'none', 'RS256', 'RS256'],
    fetchTimeoutMs: 0,
    staleIfErrorMs: -1,
    minRefreshIntervalMs: 1_000_000,
  })
  t.same(bad.map(p => p.path), [
    '/name', '/issuer', '/jwksUri', '/jwksUri', '/algorithms/0', '/algorithms/1', '/algorithms',
    '/fetchTimeoutMs', '/staleIfErrorMs', '/defaultRefreshIntervalMs',
  ])
  t.match(bad.find(p => p.path === '/algorithms/0')?.message, /symmetric/)
  t.same(checkRemoteKeySetOptions({ ...good, discovery: false }).map(p => p.path), ['/jwksUri'])
  t.same(checkRemoteKeySetOptions({ ...good, issuer: 'http://127.0.0.1:9/x', allowInsecureHttp: true }), [])
})
