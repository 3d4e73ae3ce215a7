/**
 * fix-idp-rsa-exponent (a hostile review of identity in, 2026-12-05): an RSA key's public
 * exponent was never checked. A JWKS that published e = 1 let anyone sign that issuer's tokens
 * with no private key (the PKCS#1 v1.5 padding of a token's own hash is its signature under
 * e = 1: reproduced end to end, the upstream got any `sub` and any scopes); an even e is no RSA
 * key; an e as long as the modulus made each verification ~300 times dearer, so junk tokens
 * naming it stalled every issuer on the process. Keys with an exponent that is not odd and in
 * [3, 2^32) are now ignored like too-short keys, and refused in the gateway's own keys
 * (test/config/config.test.ts, "RSA exponent" rows).
 *
 * A real JWKS server on 127.0.0.1 and a real gateway; the forged token is built here exactly as
 * an attacker would.
 */
import t from 'tap'
import { createHash, generateKeyPairSync, type JsonWebKey } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { checkKeyForAlgorithm, KeyRejection } from '../../../src/tokens/issuers/algorithms.js'
import { baseConfig, makeKey, raw, startGateway } from '../../fixtures/gateway.js'
import { startUpstream } from '../../fixtures/upstream.js'
import { until } from '../../fixtures/until.js'

const b64 = (v: bigint): string => {
  const hex = v.toString(16)
  return Buffer.from(hex.length % 2 === 0 ? hex : '0' + hex, 'hex').toString('base64url')
}
const n2048 = generateKeyPairSync('rsa', { modulusLength: 2048 }).publicKey.export({ format: 'jwk' }).n as string
const nBig = BigInt('0x' + Buffer.from(n2048, 'base64url').toString('hex'))

t.test('the exponent a verification key may have', async (t) => {
  const rows: Array<[name: string, e: bigint, expected: true | KeyRejection]> = [
    ['65537, what every IdP publishes', 65_537n, true],
    ['3 (legacy, sound with a strict verifier)', 3n, true],
    ['2^32 - 1', (1n << 32n) - 1n, true],
    ['1: every padded hash is its own signature', 1n, KeyRejection.rsaBadExponent],
    ['2: even, no RSA key', 2n, KeyRejection.rsaBadExponent],
    ['65536: even', 65_536n, KeyRejection.rsaBadExponent],
    ['2^32 + 1', (1n << 32n) + 1n, KeyRejection.rsaBadExponent],
    ['as long as the modulus: each verification ~300 times dearer', (nBig >> 1n) | 1n, KeyRejection.rsaBadExponent],
  ]
  for (const [name, e, expected] of rows) {
    const got = checkKeyForAlgorithm({ kty: 'RSA', n: n2048, e: b64(e) } satisfies JsonWebKey, 'RS256')
    t.equal(got.ok ? true : got.reason, expected, name)
  }
})

t.test('a JWKS that publishes e = 1 cannot be used to forge tokens', async (t) => {
  const jwks = { keys: [{ kty: 'RSA', kid: 'e1', alg: 'RS256', use: 'sig', n: n2048, e: 'AQ' }] }
  const idp = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(jwks)) })
  await new Promise<void>((resolve) => idp.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>((resolve) => { idp.close(() => resolve()); idp.closeAllConnections() }))
  const idpUrl = `http://127.0.0.1:${(idp.address() as AddressInfo).port}`
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const aud = 'https://api.example.test'
  const gw = await startGateway(t, {
    ...baseConfig(makeKey('EdDSA'), [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]),
    issuers: [{ name: 'idp', issuer: idpUrl, jwksUri: `${idpUrl}/jwks`, audiences: [aud], algorithms: ['RS256'] }],
  })
  const keys = gw.gateway.runtime.issuers[0]!.keys
  await until('the key set was fetched', () => keys.status.state !== 'pending', 5_000)

  // the attacker's token: signature = EMSA-PKCS1-v1_5(SHA-256(signing input)), no private key
  const part = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
  const nowSec = Math.floor(Date.now() / 1000)
  const input = `${part({ alg: 'RS256', typ: 'at+jwt', kid: 'e1' })}.${part({ iss: idpUrl, aud, sub: 'anyone-i-like', scope: 'admin', jti: 'j1', iat: nowSec, exp: nowSec + 300 })}`
  const digestInfo = Buffer.concat([Buffer.from('3031300d060960864801650304020105000420', 'hex'), createHash('sha256').update(input).digest()])
  const padded = Buffer.concat([Buffer.from([0, 1]), Buffer.alloc(256 - digestInfo.length - 3, 0xff), Buffer.from([0]), digestInfo])
  const res = await raw(gw.url, '/api/x', { headers: [['authorization', `Bearer ${input}.${padded.toString('base64url')}`]] })
  t.equal(res.status, 401, 'the forged token is refused')
  t.equal(upstream.requests.length, 0, 'and never reaches the upstream')
  t.match(JSON.stringify(keys.status), /rsa_bad_exponent/, 'the key set says why the key is ignored')
})
