import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { existsSync } from 'node:fs'
import { resolve } from 'node:path'
import { durationSec } from '../duration.js'
import { MAX_KEY_FILE_BYTES } from '../read-file.js'
import { MIN_RSA_BITS, rsaExponentAcceptable } from '../../tokens/issuers/algorithms.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig, type KeyConfig } from '../types.js'
import { guarded, problem, readConfigBytes, readConfigFile, type CheckContext, type Raw } from './context.js'

/**
 * `tokens:` — the gateway's own tokens: algorithm, keys, lifetimes. Insecure settings are
 * refused here, never silently corrected.
 */

const MIN_HS256_SECRET_BYTES = 32 // RFC 7518 §3.2: a key at least as long as the hash output
/** the largest clock skew any configuration may allow (tokens.clockSkew, issuers[].clockSkew) */
export const MAX_CLOCK_SKEW_SEC = 300
const MIN_ACCESS_TOKEN_TTL_SEC = 60
/** the longest lifetime of the gateway's own access tokens any configuration may accept (accessTokenTtl, maxTokenLifetime) */
export const MAX_ACCESS_TOKEN_TTL_SEC = 3600
const MAX_REUSE_GRACE_SEC = 60

export function checkTokens (t: Raw, ctx: CheckContext): GatewayConfig['tokens'] {
  // keys first, on their own: a malformed duration elsewhere in tokens must not hide a key problem
  const algorithm = checkAlgorithm(ctx, t.algorithm)
  const keys = guarded(ctx, () => checkKeys(ctx, t.keys, algorithm)) ?? []
  const lifetimes = guarded(ctx, () => {
    const accessTokenTtlSec = durationSec(t.accessTokenTtl)
    const l = {
      accessTokenTtlSec,
      maxTokenLifetimeSec: t.maxTokenLifetime === undefined ? accessTokenTtlSec : durationSec(t.maxTokenLifetime),
      clockSkewSec: durationSec(t.clockSkew),
      refreshTokenTtlSec: durationSec(t.refreshTokenTtl),
      sessionMaxAgeSec: durationSec(t.sessionMaxAge),
      reuseGraceSec: durationSec(t.refresh.reuseGrace),
    }
    checkLifetimes(ctx, l, t.maxTokenLifetime !== undefined)
    return l
  })
  if (lifetimes === undefined) throw new TypeError('tokens lifetimes are malformed') // the schema reported them
  if (t.refresh.transport !== 'body' && !String(t.refresh.cookieName).startsWith('__Host-')) {
    problem(ctx, '/tokens/refresh/cookieName', 'a refresh cookie must use the __Host- prefix (bound to this origin, Secure, Path=/)')
  }
  return {
    issuer: t.issuer,
    audience: t.audience,
    algorithm: algorithm ?? 'EdDSA',
    keys,
    accessTokenTtlSec: lifetimes.accessTokenTtlSec,
    maxTokenLifetimeSec: lifetimes.maxTokenLifetimeSec,
    refreshTokenTtlSec: lifetimes.refreshTokenTtlSec,
    sessionMaxAgeSec: lifetimes.sessionMaxAgeSec,
    clockSkewSec: lifetimes.clockSkewSec,
    maxTokenBytes: t.maxTokenBytes,
    verifyCacheSize: t.verifyCacheSize,
    refresh: { transport: t.refresh.transport, cookieName: t.refresh.cookieName, reuseGraceSec: lifetimes.reuseGraceSec },
    allowedOrigins: t.allowedOrigins,
  }
}

export function checkAlgorithm (ctx: CheckContext, alg: string): Algorithm | undefined {
  if (/^none$/i.test(alg)) {
    problem(ctx, '/tokens/algorithm', '"none" means unsigned tokens and is refused (RFC 8725 §3.1)')
    return undefined
  }
  if (!(ALGORITHMS as readonly string[]).includes(alg)) {
    problem(ctx, '/tokens/algorithm', `must be one of ${ALGORITHMS.join(', ')}`)
    return undefined
  }
  return alg as Algorithm
}

export function checkKeys (ctx: CheckContext, keys: Raw[], alg: Algorithm | undefined): KeyConfig[] {
  if (keys.length === 0) problem(ctx, '/tokens/keys', 'at least one key is required (the first signs, all verify)')
  const kids = new Set<string>()
  const out: KeyConfig[] = []
  keys.forEach((k, i) => {
    const path = `/tokens/keys/${i}`
    if (kids.has(k.kid)) problem(ctx, `${path}/kid`, `duplicate kid "${k.kid}"`)
    kids.add(k.kid)
    const key: KeyConfig = { kid: k.kid }
    if (alg === 'HS256') {
      if (k.privateKeyFile !== undefined || k.privateKey !== undefined || k.publicKeyFile !== undefined || k.publicKey !== undefined) {
        problem(ctx, path, 'HS256 keys take only `secretFile` or `secret`')
      }
      const secret = readSecret(ctx, k, path)
      if (secret !== undefined) key.secret = secret
    } else if (alg !== undefined) {
      if (k.secret !== undefined) problem(ctx, `${path}/secret`, `${alg} uses key pairs, not a secret`)
      if (k.secretFile !== undefined) problem(ctx, `${path}/secretFile`, `${alg} uses key pairs, not a secret`)
      const before = ctx.problems.length
      const privatePem = readPem(ctx, k.privateKey, k.privateKeyFile, `${path}/privateKeyFile`, 'use privateKey')
      const publicPem = readPem(ctx, k.publicKey, k.publicKeyFile, `${path}/publicKeyFile`, 'use publicKey')
      if (privatePem === undefined && publicPem === undefined && ctx.problems.length === before) {
        problem(ctx, path, 'needs privateKeyFile or privateKey (or publicKeyFile/publicKey for a verify-only key)')
      }
      if (i === 0 && privatePem === undefined && publicPem !== undefined) {
        problem(ctx, path, 'the first key signs tokens: it needs a private key')
      }
      const pem = privatePem ?? publicPem
      if (pem !== undefined) {
        const field = privatePem !== undefined ? (k.privateKey !== undefined ? 'privateKey' : 'privateKeyFile') : (k.publicKey !== undefined ? 'publicKey' : 'publicKeyFile')
        const keyObject = parseKey(ctx, pem, privatePem !== undefined, `${path}/${field}`)
        if (keyObject !== undefined) checkKeyMatchesAlgorithm(ctx, keyObject, alg, path)
      }
      if (privatePem !== undefined) key.privateKeyPem = privatePem
      if (publicPem !== undefined) key.publicKeyPem = publicPem
    }
    out.push(key)
  })
  return out
}

function readPem (ctx: CheckContext, inline: string | undefined, file: string | undefined, path: string, instead: string): string | undefined {
  if (inline !== undefined && file !== undefined) {
    problem(ctx, path, 'give the key inline or as a file, not both')
    return undefined
  }
  if (inline !== undefined) return inline
  return file === undefined ? undefined : readConfigFile(ctx, file, path, MAX_KEY_FILE_BYTES, instead)
}

/**
 * An HS256 secret, from `secretFile` (what `portcullis keys generate --alg HS256` writes) or
 * inline. `secret: /etc/portcullis/keys/k1.secret` made the path itself the HMAC key, and
 * anyone who can read the configuration could sign tokens: a secret that names a file is refused.
 */
function readSecret (ctx: CheckContext, k: Raw, path: string): string | undefined {
  if (k.secret !== undefined && k.secretFile !== undefined) {
    problem(ctx, path, 'give the secret inline or as a file (secretFile), not both')
    return undefined
  }
  if (k.secretFile !== undefined) {
    const bytes = readConfigBytes(ctx, k.secretFile, `${path}/secretFile`, MAX_KEY_FILE_BYTES, 'use secret')
    if (bytes === undefined) return undefined
    let text: string
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(bytes)
    } catch {
      problem(ctx, `${path}/secretFile`, 'must hold text, e.g. as written by `portcullis keys generate --alg HS256` or `openssl rand -base64 48`')
      return undefined
    }
    // the newline an editor or `keys generate` ends the file with is not part of the secret
    return checkSecret(ctx, text.replace(/\r?\n$/, ''), `${path}/secretFile`, 'the file must hold')
  }
  if (typeof k.secret !== 'string') {
    problem(ctx, `${path}/secret`, `needs secretFile or secret: an HS256 secret of at least ${MIN_HS256_SECRET_BYTES} bytes`)
    return undefined
  }
  if (namesAFile(ctx, k.secret)) {
    problem(ctx, `${path}/secret`, 'names a file: use secretFile (secret is the key itself)')
    return undefined
  }
  return checkSecret(ctx, k.secret, `${path}/secret`, 'an HS256 secret must be')
}

function checkSecret (ctx: CheckContext, secret: string, path: string, subject: string): string | undefined {
  // an HMAC keyed with a PEM — a public key above all — is the algorithm confusion of RFC 8725 §2.1
  if (/-----(BEGIN|END) /.test(secret)) {
    problem(ctx, path, 'is PEM text: HS256 takes a random secret; a key pair needs EdDSA, ES256, RS256 or PS256')
    return undefined
  }
  if (Buffer.byteLength(secret) < MIN_HS256_SECRET_BYTES) {
    problem(ctx, path, `${subject} at least ${MIN_HS256_SECRET_BYTES} bytes`)
    return undefined
  }
  return secret
}

/**
 * A secret that names an existing file (absolute, or relative to the configuration), or looks
 * like a path to one (`/etc/…/k1.secret`, `./k1.secret`: where `check` runs the file may not
 * exist). Random secrets (base64, hex) have no `.` and do not start with `./`.
 */
function namesAFile (ctx: CheckContext, secret: string): boolean {
  if (/^(\/|\.\.?\/|~\/)\S*\.[A-Za-z0-9]{1,12}$/.test(secret)) return true
  return secret !== '' && !/[\r\n\0]/.test(secret) && existsSync(resolve(ctx.baseDir, secret))
}

// the PEM blocks that hold a key (RFC 7468); `EC PARAMETERS` before an EC key (openssl ecparam
// -genkey) is no second key
const KEY_BLOCK = /-----BEGIN ((ENCRYPTED |RSA |EC |DSA )?PRIVATE KEY|(RSA )?PUBLIC KEY|CERTIFICATE)-----/g

function parseKey (ctx: CheckContext, pem: string, isPrivate: boolean, path: string): KeyObject | undefined {
  // a file of two keys was taken silently by its first (a stop 43 review finding): which one
  // signs must not depend on the order someone concatenated files in
  const blocks = pem.match(KEY_BLOCK)?.length ?? 0
  if (blocks > 1) {
    problem(ctx, path, `holds ${blocks} keys (PEM blocks): give one key per entry`)
    return undefined
  }
  try {
    return isPrivate ? createPrivateKey(pem) : createPublicKey(pem)
  } catch {
    problem(ctx, path, `is not a ${isPrivate ? 'private' : 'public'} key in PEM format`)
    return undefined
  }
}

function checkKeyMatchesAlgorithm (ctx: CheckContext, key: KeyObject, alg: Algorithm, path: string): void {
  const type = key.asymmetricKeyType
  const details = key.asymmetricKeyDetails
  const ok = alg === 'EdDSA'
    ? type === 'ed25519'
    : alg === 'ES256'
      ? type === 'ec' && details?.namedCurve === 'prime256v1'
      : (type === 'rsa' || (alg === 'PS256' && type === 'rsa-pss'))
  if (!ok) problem(ctx, path, `a ${String(type)} key cannot be used with ${alg}`)
  else if ((alg === 'RS256' || alg === 'PS256') && (details?.modulusLength ?? 0) < MIN_RSA_BITS) {
    problem(ctx, path, `RSA keys must have at least ${MIN_RSA_BITS} bits`)
  } else if ((alg === 'RS256' || alg === 'PS256') && !rsaExponentAcceptable(details?.publicExponent)) {
    problem(ctx, path, 'the RSA public exponent must be odd and between 3 and 2^32 (65537 is usual)')
  }
}

interface Lifetimes { accessTokenTtlSec: number, maxTokenLifetimeSec: number, clockSkewSec: number, refreshTokenTtlSec: number, sessionMaxAgeSec: number, reuseGraceSec: number }

function checkLifetimes (ctx: CheckContext, t: Lifetimes, maxLifetimeGiven: boolean): void {
  if (t.accessTokenTtlSec < MIN_ACCESS_TOKEN_TTL_SEC || t.accessTokenTtlSec > MAX_ACCESS_TOKEN_TTL_SEC) {
    problem(ctx, '/tokens/accessTokenTtl', 'must be between 1m and 1h (access tokens cannot be recalled from clients; keep them short)')
  }
  // a verifier that accepts longer lifetimes than the gateway issues widens what a stolen signing key buys
  if (maxLifetimeGiven && (t.maxTokenLifetimeSec < t.accessTokenTtlSec || t.maxTokenLifetimeSec > MAX_ACCESS_TOKEN_TTL_SEC)) {
    problem(ctx, '/tokens/maxTokenLifetime', 'must be between accessTokenTtl and 1h')
  }
  if (t.clockSkewSec > MAX_CLOCK_SKEW_SEC) problem(ctx, '/tokens/clockSkew', 'must be at most 5m')
  if (t.reuseGraceSec > MAX_REUSE_GRACE_SEC) problem(ctx, '/tokens/refresh/reuseGrace', 'must be at most 60s (a longer window lets a stolen token be replayed)')
  if (t.refreshTokenTtlSec < t.accessTokenTtlSec) problem(ctx, '/tokens/refreshTokenTtl', 'must be at least accessTokenTtl')
  if (t.sessionMaxAgeSec < t.refreshTokenTtlSec) problem(ctx, '/tokens/sessionMaxAge', 'must be at least refreshTokenTtl')
}
