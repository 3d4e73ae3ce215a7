import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { ErrorCode, GatewayError, invalidToken } from '../src/errors.js'
import { checkPath } from '../src/pipeline/path.js'
import { extractBearer } from '../src/pipeline/extract.js'
import { satisfies, type RoutePolicy } from '../src/pipeline/authorize.js'
import { Reason, type AuthState } from '../src/pipeline/auth-state.js'
import type { Denylist } from '../src/pipeline/denylist.js'
import type { TokenVerifier } from '../src/tokens/verifier.js'

export interface AuthPluginOptions {
  verifier: TokenVerifier
  denylist: Denylist
  clock: () => number
}

/**
 * The request pipeline up to the proxy:
 * check path → (route matched by the router) → method → extract → verify → revocation → authorize.
 *
 * Every request gets its path checked in a global onRequest hook, including ones no route
 * matches. The rest runs in the route's own onRequest hook, made by `app.guard(policy)` at
 * boot with the route's compiled policy bound in: nothing is looked up per request.
 */
export default fp(async function auth (app, opts: AuthPluginOptions) {
  const { verifier, denylist, clock } = opts
  app.decorateRequest('auth', undefined)

  app.addHook('onRequest', (request, _reply, done) => {
    try {
      checkPath(request.url)
    } catch (err) {
      request.auth = refused('', Reason.pathRejected)
      done(err as GatewayError)
      return
    }
    done()
  })

  app.decorate('guard', function guard (policy: RoutePolicy): onRequestHookHandler {
    return function guardRoute (request, reply, done) {
      const state: AuthState = { route: policy.name, granted: false, reason: Reason.pending, token: undefined }
      request.auth = state
      try {
        authorize(request, reply, policy, state)
        state.granted = true
        done()
      } catch (err) {
        state.reason = (err as GatewayError).code ?? Reason.pending
        done(err as GatewayError)
      }
    }
  })

  function authorize (request: FastifyRequest, reply: FastifyReply, policy: RoutePolicy, state: AuthState): void {
    const method = request.method
    if (policy.methods !== undefined && !policy.methods.has(method)) {
      reply.header('allow', policy.allow) // RFC 9110 §15.5.6
      throw new GatewayError(ErrorCode.methodNotAllowed, 405, `${method} is not allowed on this route`)
    }
    if (policy.auth === 'public') { state.reason = Reason.public; return }
    const raw = extractBearer(request.headers.authorization)
    if (raw === undefined) {
      if (policy.auth === 'optional') { state.reason = Reason.anonymous; return }
      throw new GatewayError(ErrorCode.missingToken, 401, 'an access token is required')
    }
    const token = verifier.verify(raw, clock())
    const revoked = denylist.check(token.claims)
    if (revoked !== undefined) throw invalidToken(ErrorCode.tokenRevoked, 'the access token was revoked')
    state.token = token
    const requirement = policy.scopes.get(method)
    if (requirement !== undefined && !satisfies(requirement, token.scopes)) {
      throw new GatewayError(ErrorCode.insufficientScope, 403, 'the access token lacks a scope this route requires', {
        oauthError: 'insufficient_scope',
        scope: requirement.challenge,
      })
    }
    state.reason = Reason.granted
  }
}, { name: 'portcullis-auth', fastify: '5.x' })

function refused (route: string, reason: string): AuthState {
  return { route, granted: false, reason, token: undefined }
}

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the route's guard; undefined on routes it does not guard */
    auth: AuthState | undefined
  }
  interface FastifyInstance {
    /** the onRequest hook that authorizes requests on a route with this policy (built at boot) */
    guard: (policy: RoutePolicy) => onRequestHookHandler
  }
}
