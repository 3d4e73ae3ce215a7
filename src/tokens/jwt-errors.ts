import { TokenError } from 'fast-jwt'
import { ErrorCode, GatewayError, invalidToken } from '../errors.js'

/**
 * Translation at the boundary (STYLE habit 4): the one place fast-jwt's errors become the
 * gateway's, with the original kept as `cause`; and the claim checks every issuer shares.
 */

const JWT_ERRORS: Record<string, [ErrorCode, string]> = {
  [TokenError.codes.invalidAlgorithm]: [ErrorCode.tokenBadAlgorithm, 'the access token uses an algorithm this gateway does not accept'],
  [TokenError.codes.invalidSignature]: [ErrorCode.tokenBadSignature, 'the access token signature is invalid'],
  [TokenError.codes.missingSignature]: [ErrorCode.tokenBadSignature, 'the access token is not signed'],
  [TokenError.codes.invalidType]: [ErrorCode.tokenBadType, 'the token is not an access token (typ must be at+jwt)'],
  [TokenError.codes.invalidCritHeader]: [ErrorCode.tokenUnsupportedCrit, 'the access token has a critical header this gateway does not understand'],
  [TokenError.codes.missingRequiredClaim]: [ErrorCode.tokenMissingClaim, 'the access token lacks a required claim'],
  [TokenError.codes.malformed]: [ErrorCode.tokenMalformed, 'the access token is malformed'],
  [TokenError.codes.invalidPayload]: [ErrorCode.tokenMalformed, 'the access token is malformed'],
}

/** The one place fast-jwt errors become client errors; the original is kept as cause. */
export function translateJwtError (err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  const code = (err as { code?: string }).code
  const message = (err as { message?: string }).message ?? ''
  if (code === TokenError.codes.invalidClaimValue || code === TokenError.codes.invalidClaimType) {
    if (/\biss\b/.test(message)) return invalidToken(ErrorCode.tokenBadIssuer, 'the access token was issued by someone else', err)
    if (/\baud\b/.test(message)) return invalidToken(ErrorCode.tokenBadAudience, 'the access token is meant for another audience', err)
    return invalidToken(ErrorCode.tokenBadClaim, 'the access token has an invalid claim', err)
  }
  const known = code === undefined ? undefined : JWT_ERRORS[code]
  if (known !== undefined) return invalidToken(known[0], known[1], err)
  // anything else (a key error, a crypto failure on garbage input) is still the token's fault
  return invalidToken(ErrorCode.tokenMalformed, 'the access token is invalid', err)
}

export function isNumericDate (v: unknown): v is number {
  return typeof v === 'number' && Number.isFinite(v) && v >= 0
}

export function badClaim (claim: string): GatewayError {
  return invalidToken(ErrorCode.tokenBadClaim, `the access token has an invalid ${claim} claim`)
}

export function malformed (): GatewayError {
  return invalidToken(ErrorCode.tokenMalformed, 'the access token is malformed')
}
