import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Algorithm, KeyConfig } from '../config/types.js'

/** What fast-jwt takes as a key: PEM text for key pairs, the secret for HS256. */
export type JwtKey = string

export interface VerifyKey { kid: string, key: JwtKey }

export interface KeySet {
  algorithm: Algorithm
  /** the first configured key */
  signing: { kid: string, key: JwtKey }
  /** every configured key, by kid */
  verifying: ReadonlyMap<string, VerifyKey>
  /** the public keys as served at /.well-known/jwks.json (empty for HS256) */
  jwks: { keys: JsonWebKey[] }
}

/** Builds the key set from validated configuration (PEMs were parsed once by the config checks). */
export function buildKeySet (algorithm: Algorithm, keys: readonly KeyConfig[]): KeySet {
  const verifying = new Map<string, VerifyKey>()
  const jwks: JsonWebKey[] = []
  let signing: { kid: string, key: JwtKey } | undefined
  for (const k of keys) {
    if (algorithm === 'HS256') {
      const secret = k.secret as string
      verifying.set(k.kid, { kid: k.kid, key: secret })
      signing ??= { kid: k.kid, key: secret }
      continue
    }
    const publicKey: KeyObject = k.publicKeyPem !== undefined
      ? createPublicKey(k.publicKeyPem)
      : createPublicKey(createPrivateKey(k.privateKeyPem as string))
    const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
    verifying.set(k.kid, { kid: k.kid, key: publicPem })
    if (signing === undefined && k.privateKeyPem !== undefined) signing = { kid: k.kid, key: k.privateKeyPem }
    jwks.push({ ...publicKey.export({ format: 'jwk' }), kid: k.kid, alg: algorithm, use: 'sig' })
  }
  if (signing === undefined) throw new Error('no signing key (the configuration checks should have refused this)')
  return { algorithm, signing, verifying, jwks: { keys: jwks } }
}

export interface GeneratedKey { privateFile: string, publicFile?: string }

/** `portcullis keys generate`: a new key in PEM (PKCS#8 private, SPKI public), or an HS256 secret. */
export function generateKey (algorithm: Algorithm, kid: string, outDir: string): GeneratedKey {
  mkdirSync(outDir, { recursive: true, mode: 0o700 })
  if (algorithm === 'HS256') {
    const file = join(outDir, `${kid}.secret`)
    writeFileSync(file, randomBytes(48).toString('base64url') + '\n', { mode: 0o600, flag: 'wx' })
    return { privateFile: file }
  }
  const pair = algorithm === 'EdDSA'
    ? generateKeyPairSync('ed25519')
    : algorithm === 'ES256'
      ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
      : generateKeyPairSync('rsa', { modulusLength: 2048 })
  const privateFile = join(outDir, `${kid}.pem`)
  const publicFile = join(outDir, `${kid}.pub.pem`)
  // wx: never overwrite an existing key by accident
  writeFileSync(privateFile, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600, flag: 'wx' })
  writeFileSync(publicFile, pair.publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644, flag: 'wx' })
  return { privateFile, publicFile }
}
