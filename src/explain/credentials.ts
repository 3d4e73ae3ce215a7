import { SELF_ISSUER } from '../config/types.js'
import { scopeSet } from '../tokens/scopes.js'
import { ErrorCode, GatewayError, invalidToken } from '../errors.js'
import { type Runtime } from '../runtime.js'
import { claimAt, identityHeaders } from '../tokens/identity.js'
import { badClaim, isNumericDate } from '../tokens/jwt-errors.js'
import { decodeSegment, splitToken } from '../tokens/jwt-parts.js'
import { revocationJtiKey, type VerifiedToken } from '../tokens/verified-token.js'
import { checkTime } from '../tokens/verifier.js'
import type { Credentials, ExplainRequest } from './explain.js'
import { CLAIMS_PLACEHOLDER } from './request.js'

/** Tokens for `explain`: the Runtime's verifier where it can check offline, decoded or given claims where it cannot. */

/**
 * The authenticate stage's verify step. A raw token goes to the Runtime's verifier (own keys:
 * signature, claims, time — everything). An identity provider's token stops there at its
 * keys, which the gateway fetches at run time: its decoded claims are used instead, marked
 * unverified. Given claims are taken as they are, their time checked.
 */
export function verifyOffline (runtime: Runtime, input: ExplainRequest, raw: string, nowMs: number, out: { current: Credentials | undefined }): VerifiedToken | Promise<VerifiedToken> {
  const source = input.token !== undefined ? 'token' : input.claims !== undefined ? 'claims' : 'authorization'
  if (input.claims !== undefined && raw === CLAIMS_PLACEHOLDER) {
    out.current = { source, check: 'claims-given', note: 'claims given, signature not checked (iss, aud and required claims not checked; time checked against now)' }
    return fromClaims(runtime, input.claims, '', nowMs, out.current)
  }
  try {
    const verified = runtime.verifier.verify(raw, nowMs)
    out.current = { source, check: 'verified', note: 'verified with the gateway\'s keys: signature, claims, time' }
    return verified
  } catch (err) {
    if (!(err instanceof GatewayError) || err.code !== ErrorCode.tokenKeysUnavailable) {
      out.current = { source, check: 'invalid', note: 'refused by the gateway\'s verifier', ...decodedForDisplay(raw) }
      throw err
    }
    const [, payload] = splitToken(raw)
    const claims = decodeSegment(payload)
    const issuer = runtime.config.issuers.find(i => i.issuer === claims.iss)
    out.current = {
      source,
      check: 'unverified',
      note: `signature not checked: the keys of issuer "${issuer?.name ?? String(claims.iss)}" are fetched at run time and explain does not fetch; decided on the decoded claims (algorithm and typ were checked)`,
    }
    return fromClaims(runtime, claims, raw, nowMs, out.current)
  }
}

/** a VerifiedToken from claims, the issuer chosen by `iss` as the verifier chooses it */
function fromClaims (runtime: Runtime, claims: Record<string, unknown>, text: string, nowMs: number, cred: Credentials): VerifiedToken {
  const config = runtime.config
  let iss = claims.iss
  if (iss === undefined) {
    iss = config.tokens.issuer
    cred.note += `; no iss: taken as the gateway's own (${config.tokens.issuer})`
  }
  const external = config.issuers.find(i => i.issuer === iss)
  if (iss !== config.tokens.issuer && external === undefined) {
    throw invalidToken(ErrorCode.tokenBadIssuer, 'the access token was issued by an issuer this gateway does not trust')
  }
  const { sub, jti, exp, nbf } = claims
  if (exp !== undefined && !isNumericDate(exp)) throw badClaim('exp')
  if (nbf !== undefined && !isNumericDate(nbf)) throw badClaim('nbf')
  if (exp === undefined) cred.note += '; no exp: a real token needs one'
  const skewMs = (external === undefined ? config.tokens.clockSkewSec : external.clockSkewSec) * 1000
  const scopePath = external === undefined ? ['scope'] : external.scopeClaim
  const scopes = scopesAt(claims, scopePath, external === undefined)
  // what the verifier refuses whoever signed the token: control characters in sub, jti or
  // sid, claims an upstream would receive as another value (fix-explain-claims-unchecked)
  runtime.verifier.checkCarried(typeof sub === 'string' ? sub : undefined, typeof jti === 'string' ? jti : undefined, claims)
  const token: VerifiedToken = {
    issuer: external === undefined ? SELF_ISSUER : external.name,
    claims,
    // no sub: no subject (no x-user-id, none in an assertion), as the verifier has it
    sub: typeof sub === 'string' ? sub : undefined,
    jti: typeof jti === 'string' ? jti : undefined,
    scopes,
    expMs: typeof exp === 'number' ? exp * 1000 : Number.POSITIVE_INFINITY,
    notBeforeMs: typeof nbf === 'number' ? nbf * 1000 - skewMs : 0,
    skewMs,
    key: undefined,
    identity: identityHeaders(claims, config.identity, scopes),
    revocationJti: revocationJtiKey(external === undefined, iss, typeof jti === 'string' ? jti : undefined, text),
    text,
  }
  Object.assign(cred, credentialsOf(cred, token))
  checkTime(token, nowMs) // the verifier's own time check
  return token
}

/** scopes as each issuer reads them: own tokens a `scope` string (RFC 9068), providers their scopeClaim */
function scopesAt (claims: Record<string, unknown>, path: readonly string[], stringOnly: boolean): ReadonlySet<string> {
  const scopes = scopeSet(claimAt(claims, path), !stringOnly)
  if (scopes === undefined) throw badClaim(path.join('.'))
  return scopes
}

/** sub and exp of a token the verifier refused, to show why (decoded, not trusted) */
function decodedForDisplay (raw: string): Partial<Credentials> {
  try {
    const { sub, exp } = decodeSegment(splitToken(raw)[1])
    return { ...(typeof sub === 'string' ? { sub } : {}), ...(isNumericDate(exp) ? { expiresAt: new Date(exp * 1000).toISOString() } : {}) }
  } catch {
    return {}
  }
}

/** how the token was treated, and what it carried when it got through authentication */
export function credentialsOf (treated: Credentials | undefined, token: VerifiedToken | undefined): Credentials | undefined {
  if (treated === undefined || token === undefined) return treated
  return {
    ...treated,
    issuer: token.issuer,
    sub: token.sub,
    scopes: [...token.scopes],
    ...(Number.isFinite(token.expMs) ? { expiresAt: new Date(token.expMs).toISOString() } : {}),
    identity: token.identity.map(([n, v]) => [n, v]),
  }
}
