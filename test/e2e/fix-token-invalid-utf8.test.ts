import t from 'tap'
import { sign as cryptoSign } from 'node:crypto'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'

// Issue 8, item 5: a correctly signed token whose JSON held invalid UTF-8 was accepted; a
// 0xFF byte inside `sub` arrived upstream as U+FFFD, so the upstream saw an identity the
// issuer never signed. RFC 7519 §7.2: the decoded header and payload must be UTF-8 →
// 401 token_malformed, never proxied.

const key = makeKey('EdDSA')

/** a JWT over exact header and payload bytes, validly signed (signWith only takes JSON values) */
function signBytes (k: TestKey, header: Buffer, payload: Buffer): string {
  const input = `${header.toString('base64url')}.${payload.toString('base64url')}`
  return `${input}.${cryptoSign(null, Buffer.from(input), k.privatePem).toString('base64url')}`
}

/** the JSON of a value with `marker` (an ASCII placeholder inside a string) replaced by raw bytes */
function jsonWithBytes (value: unknown, marker: string, bytes: number[]): Buffer {
  const text = JSON.stringify(value)
  const at = text.indexOf(marker)
  return Buffer.concat([Buffer.from(text.slice(0, at)), Buffer.from(bytes), Buffer.from(text.slice(at + marker.length))])
}

t.test('signed tokens with invalid UTF-8 in the header or payload are malformed', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const header = Buffer.from(JSON.stringify({ alg: 'EdDSA', typ: 'at+jwt', kid: key.kid }))
  const rows: Array<[name: string, token: string]> = [
    ['0xFF inside sub', signBytes(key, header, jsonWithBytes(goodClaims({ sub: 'al@@ice' }), '@@', [0xff]))],
    ['a lone continuation byte inside sub', signBytes(key, header, jsonWithBytes(goodClaims({ sub: 'al@@ice' }), '@@', [0x80]))],
    ['an overlong encoding of "/"', signBytes(key, header, jsonWithBytes(goodClaims({ sub: 'a@@b' }), '@@', [0xc0, 0xaf]))],
    ['an encoded surrogate half', signBytes(key, header, jsonWithBytes(goodClaims({ sub: 'a@@b' }), '@@', [0xed, 0xa0, 0x80]))],
    ['a truncated sequence at the end of a claim', signBytes(key, header, jsonWithBytes(goodClaims({ scope: 'orders:read@@' }), '@@', [0xe2, 0x82]))],
    ['0xFF inside a claim the gateway does not map', signBytes(key, header, jsonWithBytes(goodClaims({ note: 'x@@' }), '@@', [0xff]))],
    ['0xFF inside the header', signBytes(key, jsonWithBytes({ alg: 'EdDSA', typ: 'at+jwt', kid: key.kid, x: '@@' }, '@@', [0xff]), Buffer.from(JSON.stringify(goodClaims())))],
  ]
  for (const [name, token] of rows) {
    const before = upstream.requests.length
    const res = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    t.equal(res.status, 401, `${name}: 401`)
    t.equal(res.json().code, 'token_malformed', `${name}: token_malformed`)
    t.match(res.headers['www-authenticate'], /error="invalid_token"/, `${name}: invalid_token challenge`)
    t.equal(upstream.requests.length, before, `${name}: the upstream never saw it`)
    // a second presentation must not be let through by a cache either
    const again = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
    t.equal(again.status, 401, `${name}: still 401 the second time`)
  }

  // valid multi-byte UTF-8 is fine and arrives intact
  const ok = await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${signWith(key, goodClaims({ sub: 'José 🦀' }))}` } })
  t.equal(ok.status, 200, 'valid UTF-8 passes')
  t.equal(Buffer.from(String(upstream.requests.at(-1)?.headers['x-user-id']), 'latin1').toString('utf8'), 'José 🦀', 'and reaches the upstream as its UTF-8 bytes')
})
