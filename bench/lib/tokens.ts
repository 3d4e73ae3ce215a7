/**
 * Keys and access tokens for the benchmark.
 * Keys are made with node:crypto (no dependency on the product's CLI). Tokens are minted here
 * with node:crypto directly (about 2× faster than a generic signer, which matters for the
 * cold pools of 100k+ tokens); one sample per pool is checked with fast-jwt, the verifier
 * the product uses, so a minting mistake fails loudly instead of showing up as 401s.
 */
import { createHmac, createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createVerifier } from 'fast-jwt'

export const ALGORITHMS = ['EdDSA', 'ES256', 'RS256', 'HS256'] as const
export type Algorithm = typeof ALGORITHMS[number]

export const ISSUER = 'https://auth.bench.test'
export const AUDIENCE = 'api.bench.test'
export const SCOPE = 'orders:read'
export const KID = 'k1'
/** tokens live 10 minutes, the longest the gateway's bench config allows */
export const TOKEN_TTL_SEC = 600

export interface KeyMaterial {
  alg: Algorithm
  /** PKCS#8 private key PEM file (asymmetric) — what gateway.yaml points at */
  privateKeyFile?: string
  /** SPKI public key PEM file (asymmetric) — what the peers verify with */
  publicKeyFile?: string
  /** HS256 shared secret (48 random bytes, base64url) */
  secret?: string
  /** verification key text for fast-jwt: public PEM or the secret */
  verifyKey: string
  signKey: KeyObject | string
}

export function makeKeys (alg: Algorithm, dir: string): KeyMaterial {
  if (alg === 'HS256') {
    const secret = randomBytes(48).toString('base64url')
    return { alg, secret, verifyKey: secret, signKey: secret }
  }
  const pair = alg === 'EdDSA'
    ? generateKeyPairSync('ed25519')
    : alg === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const privatePem = pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()
  const publicPem = pair.publicKey.export({ type: 'spki', format: 'pem' }).toString()
  const privateKeyFile = join(dir, `${alg}-${KID}.pem`)
  const publicKeyFile = join(dir, `${alg}-${KID}.pub.pem`)
  writeFileSync(privateKeyFile, privatePem, { mode: 0o600 })
  writeFileSync(publicKeyFile, publicPem)
  // round-trip through PEM so what we sign with is exactly what the gateway loads
  createPublicKey(publicPem)
  return { alg, privateKeyFile, publicKeyFile, verifyKey: publicPem, signKey: createPrivateKey(privatePem) }
}

const b64 = (s: string): string => Buffer.from(s).toString('base64url')

export interface MintOptions {
  /** prefix that makes sub/jti distinct across pools */
  tag: string
  nowSec?: number
  scope?: string
  ttlSec?: number
  /** a fixed jti (count must be 1) */
  jti?: string
  /** another issuer's tokens (the external configurations): its iss, aud and kid */
  issuer?: string
  audience?: string
  kid?: string
}

/** mints `count` distinct tokens (distinct sub and jti), signed with `keys` */
export function mintTokens (keys: KeyMaterial, count: number, opts: MintOptions): string[] {
  const now = opts.nowSec ?? Math.floor(Date.now() / 1000)
  const header = b64(JSON.stringify({ alg: keys.alg, typ: 'at+jwt', kid: opts.kid ?? KID }))
  const out = new Array<string>(count)
  const salt = randomBytes(6).toString('hex')
  for (let i = 0; i < count; i++) {
    const claims = {
      iss: opts.issuer ?? ISSUER,
      aud: opts.audience ?? AUDIENCE,
      sub: `user-${opts.tag}-${i}`,
      jti: opts.jti ?? `${opts.tag}-${salt}-${i}`,
      iat: now,
      exp: now + (opts.ttlSec ?? TOKEN_TTL_SEC),
      scope: opts.scope ?? SCOPE,
    }
    const input = `${header}.${b64(JSON.stringify(claims))}`
    out[i] = `${input}.${signature(keys, input)}`
  }
  if (count > 0) checkToken(keys, out[0] as string, opts.issuer, opts.audience)
  return out
}

function signature (keys: KeyMaterial, input: string): string {
  const data = Buffer.from(input)
  switch (keys.alg) {
    case 'HS256': return createHmac('sha256', keys.signKey as string).update(data).digest('base64url')
    case 'EdDSA': return sign(null, data, keys.signKey as KeyObject).toString('base64url')
    case 'ES256': return sign('sha256', data, { key: keys.signKey as KeyObject, dsaEncoding: 'ieee-p1363' }).toString('base64url')
    case 'RS256': return sign('sha256', data, keys.signKey as KeyObject).toString('base64url')
  }
}

/** throws when fast-jwt (pinned algorithm, iss, aud) does not accept the token */
export function checkToken (keys: KeyMaterial, token: string, issuer = ISSUER, audience = AUDIENCE): void {
  const verify = createVerifier({ key: keys.verifyKey, algorithms: [keys.alg], allowedIss: issuer, allowedAud: audience })
  verify(token)
}

/** one token a line: the format bench/wrk/load.lua reads */
export function writeTokenFile (file: string, tokens: readonly string[]): void {
  writeFileSync(file, tokens.join('\n') + '\n')
}
