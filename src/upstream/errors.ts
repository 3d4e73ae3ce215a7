import { TokenError } from 'fast-jwt'
import { ErrorCode, GatewayError, invalidToken } from '../errors.js'

/**
 * The kit's refusals: 401 with the gateway's own stable codes (an assertion is a token, and
 * an upstream team reads one vocabulary), messages about "the identity assertion". The one
 * place @fastify/jwt's and fast-jwt's errors become ours (STYLE habit 4); the original is
 * kept as `cause`.
 *
 * @fastify/jwt folds fast-jwt's signature, claim-value and required-claim errors into
 * FST_JWT_AUTHORIZATION_TOKEN_INVALID, keeping fast-jwt's message in its own (its default
 * `authorizationTokenInvalid` message function): the message is all that tells them apart.
 */

export function missingAssertion (header: string): GatewayError {
  return invalidToken(ErrorCode.missingToken, `the request carries no identity assertion (${header}); requests must come through the gateway`)
}

const refusal = (code: ErrorCode, what: string, cause?: unknown): GatewayError => invalidToken(code, `the identity assertion ${what}`, cause)

const FAST_JWT: Record<string, [ErrorCode, string]> = {
  [TokenError.codes.invalidAlgorithm]: [ErrorCode.tokenBadAlgorithm, 'uses an algorithm this service does not accept'],
  [TokenError.codes.invalidSignature]: [ErrorCode.tokenBadSignature, 'has an invalid signature'],
  [TokenError.codes.missingSignature]: [ErrorCode.tokenBadSignature, 'is not signed'],
  [TokenError.codes.invalidType]: [ErrorCode.tokenBadType, 'is not a portcullis assertion (typ)'],
  [TokenError.codes.invalidCritHeader]: [ErrorCode.tokenUnsupportedCrit, 'has a critical header this service does not understand'],
  [TokenError.codes.missingRequiredClaim]: [ErrorCode.tokenMissingClaim, 'lacks a required claim'],
  [TokenError.codes.expired]: [ErrorCode.tokenExpired, 'expired'],
  [TokenError.codes.inactive]: [ErrorCode.tokenNotYetValid, 'is not valid yet'],
  [TokenError.codes.malformed]: [ErrorCode.tokenMalformed, 'is malformed'],
  [TokenError.codes.invalidPayload]: [ErrorCode.tokenMalformed, 'is malformed'],
}

export function assertionError (err: unknown): GatewayError {
  if (err instanceof GatewayError) return err
  const code = (err as { code?: unknown }).code
  const message = String((err as { message?: unknown }).message ?? '')
  switch (code) {
    case 'FST_JWT_AUTHORIZATION_TOKEN_EXPIRED':
      return refusal(ErrorCode.tokenExpired, 'expired', err)
    case 'FST_JWT_AUTHORIZATION_TOKEN_UNSIGNED':
    case 'FAST_JWT_MISSING_SIGNATURE':
      return refusal(ErrorCode.tokenBadSignature, 'is not signed', err)
    case 'FST_JWT_BAD_REQUEST':
    case 'FST_JWT_NO_AUTHORIZATION_IN_HEADER':
      return refusal(ErrorCode.missingToken, 'is missing', err)
    case 'FST_JWT_AUTHORIZATION_TOKEN_INVALID':
      return fromMessage(message, err)
  }
  if (code === TokenError.codes.invalidClaimValue || code === TokenError.codes.invalidClaimType) return fromMessage(message, err)
  const known = typeof code === 'string' ? FAST_JWT[code] : undefined
  if (known !== undefined) return refusal(known[0], known[1], err)
  // anything else (a key error, a crypto failure on garbage input) is still the assertion's fault
  return refusal(ErrorCode.tokenMalformed, 'is invalid', err)
}

function fromMessage (message: string, cause: unknown): GatewayError {
  if (/signature/i.test(message)) return refusal(ErrorCode.tokenBadSignature, 'has an invalid signature', cause)
  // before iss/aud: "The aud claim is required." names the claim too
  if (/is required/.test(message)) return refusal(ErrorCode.tokenMissingClaim, 'lacks a required claim', cause)
  if (/\biss\b/.test(message)) return refusal(ErrorCode.tokenBadIssuer, 'was not issued by the gateway this service trusts', cause)
  if (/\baud\b/.test(message)) return refusal(ErrorCode.tokenBadAudience, 'is meant for another service', cause)
  if (/malformed|not a valid/i.test(message)) return refusal(ErrorCode.tokenMalformed, 'is malformed', cause)
  return refusal(ErrorCode.tokenBadClaim, 'has an invalid claim', cause)
}

/** 403 for a verified assertion that lacks a scope the handler requires (RFC 6750 §3.1) */
export function insufficientScope (required: readonly string[]): GatewayError {
  return new GatewayError(ErrorCode.insufficientScope, 403, 'the identity assertion lacks a scope this endpoint requires', {
    oauthError: 'insufficient_scope',
    scope: required.join(' '),
  })
}
