import type { FastifyReply, FastifyRequest } from 'fastify'
import { ErrorCode, GatewayError, routeNotFound } from '../errors.js'
import type { CompiledRoute, Runtime } from '../runtime.js'
import type { VerifiedToken } from '../tokens/verified-token.js'
import { Reason, type AuthState } from './auth-state.js'
import { authenticate, missingToken } from './authenticate.js'
import { authorize, checkMethod } from './authorize.js'
import { isPreflight } from './cors.js'
import { checkQuery } from './edge.js'

/** what the pipeline hands the proxy stage */
export interface PassedRequest {
  runtime: Runtime
  route: CompiledRoute
  /** the gateway's CORS response headers ([name, value, …]) on a CORS route */
  cors: string[] | undefined
}

/**
 * The request path of a proxied route, in order — the one place that lists the stages
 * (the edge stage, src/pipeline/edge.ts, ran before it for every request):
 *
 *   match route → CORS (preflights answered here) → method
 *     → query (a token or `_method` in it refused) → [public: done]
 *     → authenticate (extract, verify, revocation)
 *     → authorize (issuer, scopes) → [handler: rewrite headers → proxy]
 *
 * Sync on the hot path. It returns a promise only while an unknown key of an external
 * issuer is fetched (single-flight). Every refusal is thrown as a GatewayError, whose
 * `code` becomes the decision's `reason`; `answered` means the response was sent here.
 */
export function runPipeline (request: FastifyRequest, reply: FastifyReply, runtime: Runtime, state: AuthState, nowMs: number): 'answered' | undefined | Promise<undefined> {
  const route = runtime.routes.match(request.url)
  if (route === undefined) {
    corsBeforeRoute(runtime, request, reply)
    throw routeNotFound()
  }
  state.route = route.name
  const passed: PassedRequest = { runtime, route, cors: undefined }
  request.passed = passed
  const policy = route.policy

  if (route.cors && runtime.cors !== undefined) {
    const origin = request.headers.origin
    if (isPreflight(request.method, request.headers)) {
      reply.header('vary', 'Origin') // a refused preflight varies with Origin too
      setHeaders(reply, runtime.cors.preflight(origin as string, policy.allow))
      state.granted = true
      state.reason = Reason.preflight
      reply.code(204).header('content-length', '0').send()
      return 'answered'
    }
    passed.cors = runtime.cors.headers(origin)
    setHeaders(reply, passed.cors) // for the gateway's own answers (401, 403…); the proxy writes its own
  }

  try {
    checkMethod(policy, request.method)
  } catch (err) {
    reply.header('allow', policy.allow) // RFC 9110 §15.5.6
    throw err
  }
  checkQuery(request.url, request.method, policy.auth !== 'public')
  if (policy.auth === 'public') {
    state.granted = true
    state.reason = Reason.public
    return undefined
  }

  const token = authenticate(runtime.authenticator, request.headers, nowMs, (request.raw as { upgrade?: boolean }).upgrade === true)
  if (token instanceof Promise) return token.then(t => { admit(route, request.method, state, t); return undefined })
  admit(route, request.method, state, token)
  return undefined
}

function admit (route: CompiledRoute, method: string, state: AuthState, token: VerifiedToken | undefined): void {
  if (token === undefined) {
    if (route.policy.auth !== 'optional') throw missingToken()
    state.granted = true
    state.reason = Reason.anonymous
    return
  }
  state.token = token
  authorize(route.policy, method, token)
  state.granted = true
  state.reason = Reason.granted
}

/**
 * Why a configuration no longer admits an open WebSocket, or undefined when it does — the
 * handshake's route checks again for a reload (LiveSockets.reload): the route the socket's
 * path matches now must take WebSocket upgrades and GET, and admit its token (issuer, scopes)
 * or, for an anonymous socket, none. The token was verified by the same configuration.
 */
export function socketRefusal (runtime: Runtime, url: string, token: VerifiedToken | undefined): string | undefined {
  const route = runtime.routes.match(url)
  if (route === undefined || !route.config.websocket) return 'the new configuration has no WebSocket route for this path'
  const policy = route.policy
  try {
    checkMethod(policy, 'GET')
    if (policy.auth === 'public') return undefined
    if (token === undefined) return policy.auth === 'optional' ? undefined : 'the route now requires an access token'
    authorize(policy, 'GET', token)
    return undefined
  } catch (err) {
    return (err as GatewayError).message
  }
}

/**
 * A method Fastify routes that the gateway never forwards — WebDAV's PROPFIND and MKCOL,
 * TRACE, PURGE, QUERY… and, over HTTP/2, any other (plugins/edge.ts). A route's rules name
 * only the seven forwarded methods, so none of these could be authorized: 405 with the
 * matched route's `Allow` and its own CORS setting (as the pipeline's CORS stage applies it:
 * a `cors: false` route answers without CORS headers), 404 where no route matches. The
 * refusal route of plugins/proxy.ts and `portcullis explain` both ask here.
 */
export function unforwardedMethod (request: FastifyRequest, reply: FastifyReply, runtime: Runtime, state: AuthState): GatewayError {
  const route = runtime.routes.match(request.url)
  if (route === undefined) {
    corsBeforeRoute(runtime, request, reply)
    return routeNotFound()
  }
  state.route = route.name
  request.passed = { runtime, route, cors: undefined }
  if (route.cors && runtime.cors !== undefined) setHeaders(reply, runtime.cors.headers(request.headers.origin))
  reply.header('allow', route.policy.allow) // RFC 9110 §15.5.6
  return new GatewayError(ErrorCode.methodNotAllowed, 405, `${request.method.slice(0, 32)} is not a method this gateway forwards`)
}

/**
 * The CORS headers of an answer refused before any route is known (the edge stage's 400s and
 * 501s, a 404): the gateway's `cors:` policy, so a listed origin's script reads the error code
 * where it saw an opaque network error (no route can have opted out: there is none yet). An
 * origin not listed gets `Vary: Origin` only, as on a route.
 */
export function corsBeforeRoute (runtime: Runtime, request: FastifyRequest, reply: FastifyReply): void {
  if (runtime.cors !== undefined) setHeaders(reply, runtime.cors.headers(request.headers.origin))
}

export function setHeaders (reply: FastifyReply, list: readonly string[]): void {
  for (let i = 0; i < list.length; i += 2) reply.header(list[i] as string, list[i + 1] as string)
}

declare module 'fastify' {
  interface FastifyRequest {
    /** set by the pipeline once a route matched */
    passed: PassedRequest | undefined
  }
}
