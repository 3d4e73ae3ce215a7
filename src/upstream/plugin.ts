import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import fastifyJwt from '@fastify/jwt'
import { ConfigError, ErrorCode, invalidToken } from '../errors.js'
import { ASSERTION_TYP } from '../tokens/assertion.js'
import type { RemoteAlgorithm } from '../tokens/issuers/algorithms.js'
import type { KeySetLogger } from '../tokens/issuers/options.js'
import { assertionError, insufficientScope, missingAssertion } from './errors.js'
import { remoteKeys, staticKeys, type AssertionKeys } from './keys.js'
import { checkUpstreamOptions, resolveUpstreamOptions, type PortcullisUpstreamOptions, type ResolvedUpstreamOptions } from './options.js'
import type { PortcullisUser } from './types.js'

/**
 * @fastify/jwt registered under a namespace of its own, so its request methods and options
 * stay apart from an app's own @fastify/jwt. Not `request.user`: every @fastify/jwt writes
 * it, and an app's `jwtVerify` after the kit's replaced the verified caller with its own
 * token's claims — `requireScopes('admin')` then passed on those (fix-kit-user-shared). The
 * kit keeps its verdict in a slot of its own (USER), read through `request.portcullisUser`.
 */
const NAMESPACE = 'portcullis'
const VERIFY = 'portcullisAssertionVerify'
const DECODE = 'portcullisAssertionDecode'
/** the gateway caps identity.assertion.lifetime at 1h; a longer one was not made by it */
const MAX_LIFETIME_SEC = 3600
const REQUIRED_CLAIMS = ['iss', 'aud', 'sub', 'exp', 'iat', 'jti']
/** the verified caller, where only the kit writes: a symbol, and a getter-only decorator to read it */
const USER = Symbol('portcullis.user')

type Verifiable = Record<typeof VERIFY, (this: FastifyRequest) => Promise<PortcullisUser>> & { [USER]: PortcullisUser | null }

/**
 * The upstream kit: verifies the signed identity assertion the gateway sends (DESIGN:
 * "Identity out") and exposes its subject as `request.portcullisUser` (read-only; the kit's
 * own, which requireScopes reads) and `request.user` (@fastify/jwt's: shared with an app's
 * own @fastify/jwt, whose jwtVerify overwrites it). Built on @fastify/jwt (lookup → key →
 * verify → `trusted` → user) with fast-jwt underneath:
 *
 * - the header is the one the gateway writes (`x-portcullis-assertion`), never Authorization;
 * - the key comes from the gateway's JWKS by `kid` (jwksUrl or a given JWKS), for a pinned
 *   algorithm only; `jku`, `x5u`, `jwk`, `x5c` are never read; an unknown kid costs one
 *   single-flight refetch with a cooldown;
 * - `typ` must be portcullis-assertion+jwt (an access token replayed into the header is
 *   refused), `iss` the gateway's, `aud` this service's, `exp` not past (with a small
 *   tolerance), `iat` not in the future, lifetime at most 1h, `sub iat exp jti` present and
 *   `sub` a non-empty string (the gateway sends none for a token without a subject);
 * - verified assertions are cached by fast-jwt (the gateway reuses one per token for minutes).
 *
 * Refusals are 401 with the gateway's stable codes (token_expired, token_invalid_audience…).
 */
async function portcullisUpstream (app: FastifyInstance, options: PortcullisUpstreamOptions): Promise<void> {
  const problems = checkUpstreamOptions(options)
  if (problems.length > 0) throw new ConfigError(problems, 'portcullis upstream options')
  const o = resolveUpstreamOptions(options)
  const keys = o.jwks !== undefined
    ? staticKeys(o.jwks, o.algorithms as RemoteAlgorithm[])
    : remoteKeys(o, options.logger ?? pinoLike(app), options.dispatcher)
  app.addHook('onClose', async () => { await keys.close() })
  // a gateway that is down does not stop this service from starting: requests get 401
  // token_keys_unavailable until the keys arrive
  await keys.settled(o.startupWaitMs)

  await app.register(fastifyJwt, {
    namespace: NAMESPACE,
    jwtVerify: VERIFY,
    jwtDecode: DECODE,
    // verify-only: a function for the public key, no private key (so no jwtSign that could mint)
    secret: { public: async (_request: FastifyRequest, decoded: unknown) => keyFor(keys, o, decoded) },
    decode: { complete: true },
    verify: {
      extractToken: (request: FastifyRequest) => headerValue(request, o.header),
      algorithms: o.algorithms as RemoteAlgorithm[],
      allowedIss: o.issuer,
      allowedAud: [...o.audiences],
      checkTyp: ASSERTION_TYP,
      requiredClaims: REQUIRED_CLAIMS,
      clockTolerance: o.clockToleranceSec * 1000,
      ...(o.cacheSize > 0 ? { cache: o.cacheSize } : {}),
    },
    trusted: async (_request: FastifyRequest, payload: Record<string, any>) => checkClaims(payload, o),
    formatUser: (payload) => toUser(payload as Record<string, unknown>),
  })

  async function verifyAssertion (request: FastifyRequest, _reply?: FastifyReply): Promise<void> {
    if (headerValue(request, o.header) === undefined) throw missingAssertion(o.header)
    const r = request as unknown as Verifiable
    try {
      r[USER] = await r[VERIFY].call(request)
    } catch (err) {
      throw assertionError(err)
    }
  }

  app.decorateRequest(USER, null)
  app.decorateRequest('portcullisUser', { getter (this: FastifyRequest) { return (this as unknown as Verifiable)[USER] } })

  app.decorate('verifyAssertion', verifyAssertion)
  app.decorate('portcullisUpstream', { get keys () { return keys.status } })
  if (o.global) app.addHook('onRequest', verifyAssertion)
}

/** the key @fastify/jwt verifies with: by kid, for a pinned alg, from the gateway's JWKS only */
async function keyFor (keys: AssertionKeys, o: ResolvedUpstreamOptions, decoded: unknown): Promise<string> {
  const header = (decoded as { header?: Record<string, unknown> } | undefined)?.header ?? {}
  const { alg, kid, typ } = header
  // checked before any key is looked up: an access token replayed here never causes a refetch
  if (typeof typ !== 'string' || typ.toLowerCase().replace(/^application\//, '') !== ASSERTION_TYP) {
    throw invalidToken(ErrorCode.tokenBadType, 'the identity assertion is not a portcullis assertion (typ)')
  }
  if (typeof alg !== 'string' || !o.algorithms.includes(alg)) {
    throw invalidToken(ErrorCode.tokenBadAlgorithm, 'the identity assertion uses an algorithm this service does not accept')
  }
  if (kid !== undefined && typeof kid !== 'string') throw invalidToken(ErrorCode.tokenMalformed, 'the identity assertion is malformed')
  const found = keys.key(kid, alg)
  if (found !== undefined) return found.pem
  if (!keys.available) {
    if (kid !== undefined) keys.refetch(kid).catch(() => {})
    throw invalidToken(ErrorCode.tokenKeysUnavailable, "the gateway's keys are not available yet; retry shortly")
  }
  if (kid === undefined) throw invalidToken(ErrorCode.tokenUnknownKey, 'the identity assertion names no key and the gateway has several')
  if (await keys.refetch(kid)) {
    const fetched = keys.key(kid, alg)
    if (fetched !== undefined) return fetched.pem
  }
  throw invalidToken(ErrorCode.tokenUnknownKey, 'the identity assertion was signed with a key the gateway does not publish')
}

/**
 * What fast-jwt does not check: an `iat` in the future, a lifetime longer than the gateway
 * gives, and a `sub` that is not a non-empty string — `requiredClaims` only asks that it be
 * there, and `sub: ""` was the one subject of every identity-provider token without a sub
 * (fix-subless-token-one-identity).
 */
function checkClaims (payload: Record<string, unknown>, o: ResolvedUpstreamOptions): true {
  const { iat, exp, sub } = payload
  if (typeof sub !== 'string' || sub === '') throw invalidToken(ErrorCode.tokenBadClaim, 'the identity assertion has no subject (sub)')
  if (typeof iat !== 'number' || typeof exp !== 'number') throw invalidToken(ErrorCode.tokenBadClaim, 'the identity assertion has an invalid iat or exp')
  if (iat * 1000 > Date.now() + o.clockToleranceSec * 1000) {
    throw invalidToken(ErrorCode.tokenIssuedInFuture, 'the identity assertion was issued in the future')
  }
  if (exp - iat > MAX_LIFETIME_SEC) throw invalidToken(ErrorCode.tokenLifetimeTooLong, 'the identity assertion lives longer than the gateway makes them')
  return true
}

function toUser (payload: Record<string, unknown>): PortcullisUser {
  const scope = typeof payload.scope === 'string' ? payload.scope : ''
  return { ...payload, scope, scopes: scope.split(' ').filter(s => s !== '') } as PortcullisUser
}

/** the header's value; undefined when absent or empty (Node joins repeated custom headers with ", ", which no JWT survives) */
function headerValue (request: FastifyRequest, header: string): string | undefined {
  const v = request.headers[header]
  return typeof v === 'string' && v !== '' ? v : undefined
}

/** the app's pino logger, as the key set wants it */
function pinoLike (app: FastifyInstance): KeySetLogger {
  const log = app.log.child({ component: 'portcullis-upstream' })
  return {
    debug: (obj, msg) => { log.debug(obj, msg) },
    info: (obj, msg) => { log.info(obj, msg) },
    warn: (obj, msg) => { log.warn(obj, msg) },
    error: (obj, msg) => { log.error(obj, msg) },
  }
}

/**
 * A route hook that answers 403 insufficient_scope unless the assertion grants all of
 * `scopes` (the gateway already enforced the route's own rule; this is for finer checks in
 * the service). Use after verification: `{ onRequest: [app.verifyAssertion, requireScopes('orders:write')] }`
 * or, with the global hook, `{ preHandler: requireScopes('orders:write') }`.
 */
export function requireScopes (...scopes: string[]): (request: FastifyRequest) => Promise<void> {
  return async (request) => {
    // the kit's own slot, never request.user, which an app's @fastify/jwt may have replaced
    const granted = new Set(request.portcullisUser?.scopes ?? [])
    if (!scopes.every(s => granted.has(s))) throw insufficientScope(scopes)
  }
}

export default fp(portcullisUpstream, { name: 'portcullis-upstream', fastify: '5.x' })
