import { createHash, timingSafeEqual } from 'node:crypto'
import { Ajv, type ErrorObject } from 'ajv'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { ErrorCode, GatewayError } from '../src/errors.js'
import { readJsonBodiesStrictly } from '../src/json-body.js'
import type { SecurityEvents } from '../src/security-events.js'
import { UserNotFoundError } from '../src/sessions/errors.js'
import type { SessionService } from '../src/sessions/service.js'
import type { Store } from '../src/sessions/store.js'
import { CONTROL_CHARACTER } from '../src/text.js'
import { decodeSegment, splitToken } from '../src/tokens/jwt-parts.js'
import { revocationJtiKey } from '../src/tokens/verified-token.js'

export interface AdminApiOptions {
  token: string
  service: SessionService
  store: Store
  /** the gateway's own `iss` in force (a reload may change it): a jti of another is revoked under its issuer */
  selfIssuer: () => string
  /** the identity providers' `iss` in force (gateway.yaml issuers[].issuer) */
  trustedIssuers: () => readonly string[]
  /**
   * one admin_action event per request (the revocations themselves are events of the service);
   * required: a listener that forgot it served the admin API with no audit trail (fix-workers-admin-audit)
   */
  events: SecurityEvents
}

/** what the admin_action event names each endpoint */
const AdminAction = {
  listSessions: 'list_sessions',
  revokeUser: 'revoke_user',
  revokeSession: 'revoke_session',
  revokeJti: 'revoke_jti',
  revokeToken: 'revoke_token',
} as const
type AdminActionName = typeof AdminAction[keyof typeof AdminAction]

declare module 'fastify' {
  interface FastifyContextConfig {
    /** the admin_action name of an admin API route */
    adminAction?: AdminActionName
  }
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest()

/** identifiers as the store can hold them: at most this long, no control character (PostgreSQL refuses NUL in text: a 500, fix-admin-api-input-500) */
const IDENTIFIER_MAX = 200
/**
 * The admin listener's router limit on one path parameter, as sent (percent-encoded: up to 12
 * characters for each of IDENTIFIER_MAX). Fastify's default, 100, answered 414 for a user name of
 * 101–128 characters, which `users add` accepts: such an account could not be listed or revoked
 * while the gateway ran (fix-admin-long-user-name). Longer ones stay 414.
 */
export const ADMIN_MAX_PARAM_LENGTH = IDENTIFIER_MAX * 12
/** exp before 2100: no token the gateway accepts lives longer than 7 days, and a far date overflowed the store's timestamp (a 500) */
const EXP_MAX_SEC = 4_102_444_800

/**
 * The admin API's validator: what it does not understand is refused, not dropped. Fastify's
 * default one removes the properties a schema does not declare (`removeAdditional`) and
 * coerces types, so `{"jti", "exp", "isss"}` (a typo) revoked under the bare jti without a
 * word, and `"exp": "17e8"` passed as a number (fix-admin-api-refuses-unknown-input).
 */
const adminAjv = new Ajv({ removeAdditional: false, coerceTypes: false, useDefaults: false, allErrors: true, strict: false })

/** how many problems a refusal names (a body of many unknown properties gets a short answer) */
const PROBLEMS_NAMED = 5

/** every problem of a refused body or path, named: `body/isss: not allowed; body/exp: must be integer` */
function describeProblems (errors: ErrorObject[], dataVar: string): string {
  const named = errors.slice(0, PROBLEMS_NAMED).map((e) => {
    const at = dataVar + e.instancePath
    if (e.keyword === 'additionalProperties') return `${at}/${String(e.params.additionalProperty).slice(0, 64)}: not allowed`
    return `${at}: ${e.message ?? 'invalid'}`
  }).join('; ')
  return errors.length > PROBLEMS_NAMED ? `${named}; and ${errors.length - PROBLEMS_NAMED} more` : named
}

/** the rule of the `identifier` schema below, for values read from a token rather than a body */
function isIdentifier (v: unknown): v is string {
  return typeof v === 'string' && v !== '' && v.length <= IDENTIFIER_MAX && !CONTROL_CHARACTER.test(v)
}

/** what a token revocation revoked: its revocation key (the event names it, never the token) */
const revokedKeys = new WeakMap<FastifyRequest, string>()

/** the object of an action, for the event: a user name, a session id, a jti or a token's revocation key (never a token) */
function targetOf (request: FastifyRequest): string | undefined {
  const key = revokedKeys.get(request)
  if (key !== undefined) return key
  const params = request.params as { name?: unknown, sid?: unknown } | undefined
  if (typeof params?.name === 'string') return params.name
  if (typeof params?.sid === 'string') return params.sid
  const jti = (request.body as { jti?: unknown } | undefined)?.jti
  return typeof jti === 'string' ? jti : undefined
}

/**
 * The admin API on the admin listener, behind `admin.token`: list a user's sessions,
 * revoke one session, revoke a user (all sessions and access tokens), revoke one jti, revoke
 * one token (by its jti or, without one, its signed text).
 * The token is compared in constant time (digests of equal length, timingSafeEqual).
 * Every request, allowed or refused, is an `admin_action` security event.
 */
export default fp(async function adminApi (app, opts: AdminApiOptions) {
  const { service, store } = opts
  const { events } = opts
  const expected = sha256(opts.token)

  app.register(async (api) => {
    readJsonBodiesStrictly(api)
    api.setValidatorCompiler(({ schema }) => adminAjv.compile(schema))
    api.setSchemaErrorFormatter((errors, dataVar) => new GatewayError(ErrorCode.badRequest, 400, describeProblems(errors as ErrorObject[], dataVar)))
    api.addHook('onRequest', (request, _reply, done) => {
      const header = request.headers.authorization ?? ''
      const presented = header.toLowerCase().startsWith('bearer ') ? header.slice(7).trim() : ''
      if (presented === '' || !timingSafeEqual(sha256(presented), expected)) {
        done(new GatewayError(ErrorCode.adminUnauthorized, 401, 'the admin token is missing or wrong'))
        return
      }
      done()
    })

    // the stable code of a refused action, for its event
    const failures = new WeakMap<FastifyRequest, string>()
    api.addHook('onError', (request, _reply, error, done) => {
      const code = (error as { code?: unknown }).code
      failures.set(request, typeof code === 'string' ? code : ErrorCode.internal)
      done()
    })
    api.addHook('onResponse', (request: FastifyRequest, reply: FastifyReply, done) => {
      const action = request.routeOptions.config.adminAction
      if (action !== undefined) {
        const failed = reply.statusCode >= 400
        events.emit('admin_action', {
          action,
          via: 'api',
          target: targetOf(request),
          ip: request.ip,
          outcome: failed ? 'error' : 'ok',
          code: failed ? failures.get(request) ?? String(reply.statusCode) : undefined,
        })
      }
      done()
    })

    const identifier = { type: 'string', minLength: 1, maxLength: IDENTIFIER_MAX, pattern: `^[^${CONTROL_CHARACTER.source.slice(1, -1)}]+$` }
    const byName = { params: { type: 'object', required: ['name'], properties: { name: identifier } } }
    const bySid = { params: { type: 'object', required: ['sid'], properties: { sid: identifier } } }

    api.get('/admin/users/:name/sessions', { config: { adminAction: AdminAction.listSessions }, schema: byName }, async (request) => {
      const { name } = request.params as { name: string }
      return { sessions: await service.listSessions(name) }
    })

    api.post('/admin/users/:name/revoke', { config: { adminAction: AdminAction.revokeUser }, schema: byName }, async (request, reply) => {
      const { name } = request.params as { name: string }
      const user = await store.findUserByName(name)
      if (user === undefined) throw new UserNotFoundError(name)
      const sessions = await service.revokeUser(user.id)
      reply.send({ revoked: { user: name, sessions } })
    })

    api.delete('/admin/sessions/:sid', { config: { adminAction: AdminAction.revokeSession }, schema: bySid }, async (request, reply) => {
      const { sid } = request.params as { sid: string }
      await service.revokeSession(sid)
      reply.code(204).send()
    })

    api.post('/admin/revocations/jti', {
      config: { adminAction: AdminAction.revokeJti },
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['jti', 'exp'],
          // iss: the token's `iss` when an identity provider issued it (its jtis are kept under
          // its issuer: src/tokens/verified-token.ts revocationJtiKey); absent: the gateway's own
          properties: { jti: identifier, exp: { type: 'integer', minimum: 0, maximum: EXP_MAX_SEC }, iss: identifier },
        },
      },
    }, async (request, reply) => {
      const { jti, exp, iss } = request.body as { jti: string, exp: number, iss?: string }
      const own = iss === undefined || iss === opts.selfIssuer()
      // an `iss` no token the gateway accepts carries (a typo, a trailing slash): the
      // revocation would be kept under a key no token matches (fix-admin-revocation-that-revokes-nothing)
      if (!own && !opts.trustedIssuers().includes(iss)) {
        throw new GatewayError(ErrorCode.badRequest, 400, 'iss names no issuer this gateway trusts (tokens.issuer or an issuers[].issuer, exactly as tokens carry it): nothing was revoked')
      }
      if (!await service.revokeJti(revocationJtiKey(own, iss, jti) as string, exp)) throw expiredAlready()
      reply.code(204).send()
    })

    // One leaked token, whatever it carries: its jti (under its issuer, as above) or, for an
    // identity provider's token without one (Auth0's default profile, Entra ID), its signed
    // text (revocationJtiKey). Decoded, not verified: revoking a forged token harms no one,
    // and a leaked token's issuer may be one the gateway no longer trusts. The token is
    // never logged: the event names its revocation key.
    api.post('/admin/revocations/token', {
      config: { adminAction: AdminAction.revokeToken },
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          required: ['token'],
          properties: { token: { type: 'string', minLength: 1, maxLength: 65_536 } },
        },
      },
    }, async (request, reply) => {
      const { token } = request.body as { token: string }
      const claims = claimsOf(token)
      const { iss, jti, exp } = claims
      if (typeof exp !== 'number' || !Number.isFinite(exp) || exp < 0 || exp > EXP_MAX_SEC) {
        throw badToken('the token has no usable exp (a number of seconds before 2100)')
      }
      if (jti !== undefined && !isIdentifier(jti)) throw badToken('the token\'s jti is not a revocable identifier')
      if (typeof iss !== 'string' || iss === '') throw badToken('the token has no iss')
      const own = iss === opts.selfIssuer()
      const key = revocationJtiKey(own, iss, jti, token)
      if (key === undefined) throw badToken('the gateway\'s own tokens are revoked by their jti, and this one has none')
      revokedKeys.set(request, key)
      if (!await service.revokeJti(key, Math.ceil(exp))) throw expiredAlready()
      reply.code(204).send()
    })
  })
}, { name: 'portcullis-admin-api', fastify: '5.x', dependencies: ['portcullis-errors'] })

const badToken = (message: string): GatewayError => new GatewayError(ErrorCode.badRequest, 400, message)

/**
 * An `exp` already past (with the clock skew): the store keeps nothing for it, as no token it
 * names can pass — but an operator who gave a wrong `exp` (0, a typo) must not be told the
 * token is cut off when it is not (a 204 that revoked nothing; fix-admin-revocation-that-revokes-nothing).
 */
const expiredAlready = (): GatewayError =>
  new GatewayError(ErrorCode.badRequest, 400, 'exp is past: a token that has expired needs no revocation, so nothing was revoked (give the token\'s own exp)')

/** the payload of a compact JWT (not verified); a 400 when it is not one */
function claimsOf (token: string): Record<string, unknown> {
  try {
    return decodeSegment(splitToken(token)[1])
  } catch {
    throw badToken('the token is not a compact JWT (three base64url segments, a JSON payload)')
  }
}
