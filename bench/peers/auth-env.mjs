// Shared by the auth peers: reads the verification settings the runner passes in the environment.
import { readFileSync } from 'node:fs'
import { createPublicKey, createSecretKey } from 'node:crypto'

export function authSettings () {
  const alg = process.env.JWT_ALG
  if (!alg) throw new Error('JWT_ALG is required')
  const keyFile = process.env.JWT_PUBLIC_KEY_FILE
  const secret = process.env.JWT_SECRET
  const pem = keyFile ? readFileSync(keyFile, 'utf8') : undefined
  return {
    alg,
    issuer: process.env.JWT_ISSUER,
    audience: process.env.JWT_AUDIENCE,
    scope: process.env.REQUIRED_SCOPE ?? 'orders:read',
    /** the PEM text or the secret string (fast-jwt) */
    keyText: pem ?? secret,
    /** a pre-parsed KeyObject (jsonwebtoken) */
    keyObject: pem ? createPublicKey(pem) : createSecretKey(Buffer.from(secret, 'utf8')),
  }
}

/** true when the space-separated scope claim holds the required scope */
export function hasScope (scopeClaim, required) {
  return typeof scopeClaim === 'string' && scopeClaim.split(' ').includes(required)
}
