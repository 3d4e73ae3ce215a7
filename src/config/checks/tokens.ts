import { createPrivateKey, createPublicKey, type KeyObject } from 'node:crypto'
import { durationSec } from '../duration.js'
import { MIN_RSA_BITS, rsaExponentAcceptable } from '../../tokens/issuers/algorithms.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig, type KeyConfig } from '../types.js'
import { guarded, problem, readConfigFile, type CheckContext, type Raw } from './context.js'

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
        problem(ctx, path, 'HS256 keys take only `secret`')
      }
      if (typeof k.secret !== 'string' || Buffer.byteLength(k.secret) < MIN_HS256_SECRET_BYTES) {
        problem(ctx, `${path}/secret`, `an HS256 secret must be at least ${MIN_HS256_SECRET_BYTES} bytes`)
      } else key.secret = k.secret
    } else if (alg !== undefined) {
      if (k.secret !== undefined) problem(ctx, `${path}/secret`, `${alg} uses key pairs, not a secret`)
      const before = ctx.problems.length
      const privatePem = readPem(ctx, k.privateKey, k.privateKeyFile, `${path}/privateKeyFile`)
      const publicPem = readPem(ctx, k.publicKey, k.publicKeyFile, `${path}/publicKeyFile`)
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

function readPem (ctx: CheckContext, inline: string | undefined, file: string | undefined, path: string): string | undefined {
  if (inline !== undefined && file !== undefined) {
    problem(ctx, path, 'give the key inline or as a file, not both')
    return undefined
  }
  if (inline !== undefined) return inline
  return file === undefined ? undefined : readConfigFile(ctx, file, path)
}

function parseKey (ctx: CheckContext, pem: string, isPrivate: boolean, path: string): KeyObject | undefined {
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
