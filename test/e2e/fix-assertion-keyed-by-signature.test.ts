import t from 'tap'
import { createHash, createPublicKey, randomUUID } from 'node:crypto'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { AUDIENCE, baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'

// Found by an adversarial review after issue 10: the assertion signer reused an assertion
// for any token with the same *signature segment*. On a route that accepts two issuers, the
// operator of one of them (or whoever holds its JWKS) can publish an ES256 key chosen so that
// a victim's signature bytes — seen once, in a log or a leaked header — verify over the
// attacker's own claims (ECDSA key substitution: for a signature (r, s) and any message hash
// e, Q = r⁻¹(sR − eG) verifies it). The gateway verified the forged token as the attacker,
// and then handed the upstream the *victim's* cached assertion: sub = victim, token_iss = the
// gateway. The reuse key is now the whole token text, as the verify cache's is.
//
// The curve arithmetic below is the attacker's (a test cannot ask OpenSSL for this key):
// P-256 in affine coordinates with BigInt, enough for one point multiplication.

const P = 0xffffffff00000001000000000000000000000000ffffffffffffffffffffffffn
const B = 0x5ac635d8aa3a93e7b3ebbd55769886bc651d06b0cc53b0f63bce3c3e27d2604bn
const N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n
type Point = [bigint, bigint] | null
const G: Point = [0x6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296n, 0x4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5n]
const mod = (a: bigint, m: bigint): bigint => ((a % m) + m) % m
function pow (b: bigint, e: bigint, m: bigint): bigint {
  let r = 1n
  b = mod(b, m)
  for (; e > 0n; e >>= 1n) {
    if ((e & 1n) === 1n) r = r * b % m
    b = b * b % m
  }
  return r
}
const inv = (a: bigint, m: bigint): bigint => pow(a, m - 2n, m)
function add (p: Point, q: Point): Point {
  if (p === null) return q
  if (q === null) return p
  if (p[0] === q[0] && mod(p[1] + q[1], P) === 0n) return null
  const l = p[0] === q[0] ? mod(3n * p[0] * p[0] - 3n, P) * inv(2n * p[1], P) % P : mod(q[1] - p[1], P) * inv(mod(q[0] - p[0], P), P) % P
  const x = mod(l * l - p[0] - q[0], P)
  return [x, mod(l * (p[0] - x) - p[1], P)]
}
function mul (k: bigint, p: Point): Point {
  let r: Point = null
  for (k = mod(k, N); k > 0n; k >>= 1n) {
    if ((k & 1n) === 1n) r = add(r, p)
    p = add(p, p)
  }
  return r
}
const big = (b: Buffer): bigint => BigInt('0x' + b.toString('hex'))
const b64 = (x: bigint): string => Buffer.from(x.toString(16).padStart(64, '0'), 'hex').toString('base64url')
const segment = (o: unknown): string => Buffer.from(JSON.stringify(o)).toString('base64url')

t.test('a token whose signature segment is another user\'s never gets that user\'s assertion', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  let published: unknown[] = []
  const jwks = createServer((_req, res) => { res.setHeader('content-type', 'application/json'); res.end(JSON.stringify({ keys: published })) })
  await new Promise<void>(resolve => jwks.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { jwks.closeAllConnections(); jwks.close() })
  const partner = 'https://partner.test'
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', issuers: ['self', 'partner'], assertion: { audience: 'https://orders.internal' } }], {
      identity: { assertion: { header: 'x-portcullis-assertion', lifetime: '5m' } },
    }),
    issuers: [{ name: 'partner', issuer: partner, jwksUri: `http://127.0.0.1:${(jwks.address() as AddressInfo).port}/jwks`, audiences: [AUDIENCE], algorithms: ['ES256'], jwks: { minRefreshInterval: '1s', cooldown: '1s' } }],
  })

  // the victim's token: its signature's first half must be an x-coordinate of P-256 (half are)
  let victim = ''
  let r = 0n
  let s = 0n
  let y = 0n
  for (let i = 0; i < 64; i++) {
    victim = signWith(key, goodClaims({ sub: 'victim', jti: randomUUID() }))
    const sig = Buffer.from(victim.split('.')[2]!, 'base64url')
    r = big(sig.subarray(0, 32))
    s = big(sig.subarray(32))
    const rhs = mod(r * r * r - 3n * r + B, P)
    y = pow(rhs, (P + 1n) / 4n, P)
    if (r > 0n && r < N && s > 0n && s < N && y * y % P === rhs) break
  }
  t.equal((await raw(gw.url, '/orders/1', { headers: { authorization: `Bearer ${victim}` } })).status, 200, 'the victim is served')
  const victimAssertion = upstream.requests.at(-1)!.headers['x-portcullis-assertion'] as string
  t.equal(JSON.parse(Buffer.from(victimAssertion.split('.')[1]!, 'base64url').toString()).sub, 'victim')

  // the attacker: its own claims, the victim's signature, a key made to fit
  const now = Math.floor(Date.now() / 1000)
  const header = segment({ alg: 'ES256', typ: 'at+jwt', kid: 'fitted' })
  const payload = segment({ iss: partner, aud: AUDIENCE, sub: 'mallory', iat: now, exp: now + 300, jti: randomUUID() })
  const e = big(createHash('sha256').update(`${header}.${payload}`).digest())
  const Q = mul(inv(r, N), add(mul(s, [r, y]), mul(N - mod(e, N), G)))!
  const jwk = { kty: 'EC', crv: 'P-256', x: b64(Q[0]), y: b64(Q[1]), kid: 'fitted', alg: 'ES256', use: 'sig' }
  createPublicKey({ key: jwk, format: 'jwk' }) // a valid point: the key is well-formed
  published = [jwk]
  const forged = `${header}.${payload}.${victim.split('.')[2]!}`
  // the gateway fetches the partner's keys on the unknown kid (within its refresh interval)
  let res = await raw(gw.url, '/orders/1', { headers: { authorization: `Bearer ${forged}` } })
  await until('the partner key to be fetched', async () => {
    res = await raw(gw.url, '/orders/1', { headers: { authorization: `Bearer ${forged}` } })
    return res.status === 200
  }, 5000)
  t.equal(res.status, 200, 'the forged token verifies: it is the partner\'s to sign for mallory')
  const got = upstream.requests.at(-1)!.headers
  t.equal(got['x-user-id'], 'mallory', 'the identity headers are mallory\'s')
  const assertion = got['x-portcullis-assertion'] as string
  t.not(assertion, victimAssertion, 'not the victim\'s assertion')
  const claims = JSON.parse(Buffer.from(assertion.split('.')[1]!, 'base64url').toString())
  t.equal(claims.sub, 'mallory', 'the assertion names mallory')
  t.equal(claims.token_iss, partner, 'issued from the partner\'s token')
})
