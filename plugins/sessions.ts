import type { IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'
import fastifyCookie from '@fastify/cookie'
import type { FastifyReply, FastifyRequest, onRequestHookHandler } from 'fastify'
import { SELF_ISSUER, type GatewayConfig } from '../src/config/types.js'
import { ErrorCode, GatewayError, invalidRequest } from '../src/errors.js'
import { readJsonBodiesStrictly } from '../src/json-body.js'
import { authenticate, missingToken } from '../src/pipeline/authenticate.js'
import { Reason } from '../src/pipeline/auth-state.js'
import { setHeaders } from '../src/pipeline/pipeline.js'
import { restoreUnknownMethod } from './edge.js'
import { createCookieRequestCheck, isJsonContentType } from '../src/sessions/csrf.js'
import type { AccessClaims, SessionService, TokenPair } from '../src/sessions/service.js'
import type { VerifiedToken } from '../src/tokens/verified-token.js'
import { kExpectsContinue } from '../src/proxy/exchange.js'
import { CLIENT_CLOSED_STATUS, ClientGoneError, reportUnfinished } from '../src/proxy/errors.js'

export interface SessionsPluginOptions {
  config: GatewayConfig
  service: SessionService
  clock: () => number
}

const MAX_USERNAME_CHARS = 256
const ENDPOINTS = ['login', 'refresh', 'logout', 'logout-all'] as const

/**
 * The auth endpoints (DESIGN: the client's contract): login, refresh, logout, logout-all.
 * Each request walks: edge stage (every request) → CORS (the gateway's `cors:` section) →
 * CSRF for cookie-carried requests (POST only, strict JSON, Origin allow-list or same
 * origin, Sec-Fetch-Site) before the body is read, so a refused request consumes nothing →
 * 100-continue → body → the session service. Logout and logout-all authenticate through the
 * same authenticate stage as proxied routes, so a revoked access token is refused here too.
 *
 * The refresh cookie is parsed, set and cleared with @fastify/cookie, registered in this
 * scope only: proxied routes never pay for cookie parsing (their refresh-cookie stripping is
 * a hand-tuned string scan in pipeline/headers.ts).
 */
/**
 * A client that leaves once its request was read, while the endpoint still works (a login's
 * password hash takes ~15 ms, a refresh waits on the store): the work goes on — a login is
 * counted by the throttle, a session may be created — but the answer never completes, so
 * Fastify's onResponse never ran and the request left no decision line and no metric. It is
 * reported as 499 `client_closed` as it happens (fix-auth-client-gone-unreported).
 */
function reportClientGone (request: FastifyRequest, res: FastifyReply['raw']): void {
  let finished = false
  res.once('finish', () => { finished = true })
  res.once('close', () => { if (!finished) reportUnfinished(request, res, CLIENT_CLOSED_STATUS, Reason.clientClosed, new ClientGoneError()) })
}

/**
 * The refresh token in a refresh or logout body, whose one property is `refresh_token`: a
 * body of another shape is refused, not read around — a `refresh_token` that is not a string
 * (`["…"]`, `{…}`, `null`) or a misspelt property (`refreshToken`) made a logout answer 204
 * and end nothing (fix-logout-that-ends-nothing). No body, or `{}`, presents none.
 */
function bodyRefreshToken (body: unknown): string | undefined {
  if (body === undefined) return undefined
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw invalidRequest(ErrorCode.badRequest, 'the body must be a JSON object: {"refresh_token": "…"} or {}')
  }
  for (const name of Object.keys(body)) {
    if (name !== 'refresh_token') throw invalidRequest(ErrorCode.badRequest, `the body's only property is refresh_token: ${JSON.stringify(name.slice(0, 64))} is not allowed`)
  }
  const token = (body as { refresh_token?: unknown }).refresh_token
  if (token !== undefined && (typeof token !== 'string' || token === '')) throw invalidRequest(ErrorCode.badRequest, 'refresh_token must be a non-empty string')
  return token
}

export default fp(async function sessions (app, opts: SessionsPluginOptions) {
  const { config, service, clock } = opts
  const { transport, cookieName } = config.tokens.refresh
  const cookies = transport !== 'body'
  const bodies = transport !== 'cookie'
  const csrf = createCookieRequestCheck({ allowedOrigins: config.tokens.allowedOrigins })
  const cookieOptions = { path: '/', httpOnly: true, secure: true, sameSite: 'strict' } as const

  await app.register(async function authEndpoints (scope) {
    await scope.register(fastifyCookie, { hook: 'onRequest' })
    readJsonBodiesStrictly(scope)

    /** names the decision, answers CORS (preflights included) before anything else */
    const enter = (name: string): onRequestHookHandler => function (request, reply, done) {
      request.auth.route = `auth.${name}`
      reportClientGone(request, reply.raw)
      const cors = request.runtime.cors
      if (cors !== undefined) {
        const origin = request.headers.origin
        if (request.method === 'OPTIONS' && origin !== undefined && request.headers['access-control-request-method'] !== undefined) {
          try {
            setHeaders(reply, cors.preflight(origin, 'POST'))
          } catch (err) {
            reply.header('vary', 'Origin') // refused for this Origin: the answer varies with it like any other
            request.auth.reason = (err as GatewayError).code
            done(err as GatewayError)
            return
          }
          request.auth.granted = true
          request.auth.reason = Reason.preflight
          reply.code(204).header('content-length', '0').send()
          return
        }
        setHeaders(reply, cors.headers(origin))
      }
      done()
    }

    /** runs before the body is parsed: strict JSON always; browser checks when a browser speaks */
    const guard = (cookieCarried: (request: FastifyRequest) => boolean): onRequestHookHandler => function (request, _reply, done) {
      const h = request.headers
      let error: GatewayError | undefined
      if (cookieCarried(request) || h.origin !== undefined || h['sec-fetch-site'] !== undefined) {
        // request.protocol and request.host follow server.trustProxy: a same-origin SPA behind
        // a TLS-terminating load balancer is same-origin here too (issue 9)
        const verdict = csrf({ method: request.method, contentType: h['content-type'], origin: h.origin, secFetchSite: h['sec-fetch-site'] as string | undefined, host: request.host, proto: request.protocol })
        if (!verdict.ok) error = verdict.error
      } else if (!isJsonContentType(h['content-type'])) {
        error = new GatewayError(ErrorCode.unsupportedMediaType, 415, 'the body must be application/json')
      }
      if (error !== undefined) {
        request.auth.reason = error.code
        done(error)
        return
      }
      done()
    }

    // the client is told to send its body only once the checks above passed (issue 8, item 8)
    scope.addHook('preParsing', (request, reply, payload, done) => {
      if ((request.raw as IncomingMessage & { [kExpectsContinue]?: boolean })[kExpectsContinue] === true) reply.raw.writeContinue()
      done(null, payload)
    })

    // every method but POST is refused on the auth endpoints (a GET must never log anyone out),
    // those the gateway never forwards too (PROPFIND, TRACE, an unknown HTTP/2 method: they
    // were the proxy's 404 here), in onRequest, before any body is read (CONNECT: app.ts)
    const refusedMethods = app.supportedMethods.filter(m => m !== 'POST' && m !== 'CONNECT')
    const refuseMethod: onRequestHookHandler = function (request, reply, done) {
      restoreUnknownMethod(request.raw)
      reply.header('allow', 'POST')
      request.auth.reason = ErrorCode.methodNotAllowed
      done(new GatewayError(ErrorCode.methodNotAllowed, 405, 'only POST is allowed'))
    }
    for (const name of ENDPOINTS) {
      scope.route({
        method: refusedMethods,
        url: `/auth/${name}`,
        // enter answers a CORS preflight itself (the hooks after it do not run)
        onRequest: [enter(name), refuseMethod],
        handler: () => { throw new Error('unreachable: every request is refused in onRequest') },
      })
    }

    const refreshCookie = (request: FastifyRequest): string | undefined => cookies ? request.cookies[cookieName] : undefined
    const hasRefreshCookie = (request: FastifyRequest): boolean => refreshCookie(request) !== undefined

    function sendPair (request: FastifyRequest, reply: FastifyReply, pair: TokenPair): void {
      const body: Record<string, unknown> = { access_token: pair.accessToken, token_type: pair.tokenType, expires_in: pair.expiresIn }
      const refreshMaxAgeSec = Math.max(0, Math.floor((pair.refreshExpiresAt.getTime() - clock()) / 1000))
      if (bodies) {
        body.refresh_token = pair.refreshToken
        body.refresh_expires_in = refreshMaxAgeSec
      }
      if (cookies) reply.setCookie(cookieName, pair.refreshToken, { ...cookieOptions, maxAge: refreshMaxAgeSec })
      granted(request, pair.sub)
      reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(body)
    }

    const clearRefreshCookie = (reply: FastifyReply): void => { if (cookies) reply.clearCookie(cookieName, cookieOptions) }
    const client = (request: FastifyRequest): { ip: string, userAgent: string | undefined } => ({ ip: request.ip, userAgent: request.headers['user-agent'] })

    /**
     * What a logout may revoke of an access token: its jti (under its revocation key), and,
     * for the gateway's own tokens only, its session. An identity provider's token naming a
     * `sid` or `jti` of the gateway's own sessions must not end them: sids reach upstreams in
     * assertions and events, and another issuer is not trusted with this gateway's sessions
     * (fix-logout-trusts-foreign-token).
     */
    function revocableClaims (token: VerifiedToken): AccessClaims {
      if (token.issuer === SELF_ISSUER) return token.claims as AccessClaims
      return { sub: token.sub, jti: token.revocationJti, exp: token.claims.exp }
    }

    /** the request's access token through the authenticate stage (verified and not revoked) */
    async function accessToken (request: FastifyRequest): Promise<VerifiedToken | undefined> {
      return await authenticate(request.runtime.authenticator, request.headers, clock())
    }

    scope.post('/auth/login', { onRequest: [enter('login'), guard(() => false)] }, async (request, reply) => {
      const body = request.body as { username?: unknown, password?: unknown } | null
      if (body === null || typeof body !== 'object' || typeof body.username !== 'string' || typeof body.password !== 'string' ||
        body.username === '' || body.username.length > MAX_USERNAME_CHARS) {
        throw invalidRequest(ErrorCode.badRequest, 'the body must be {"username": "…", "password": "…"}')
      }
      sendPair(request, reply, await service.login(body.username, body.password, client(request)))
    })

    /**
     * The refresh token a request presents, by the configured transport — the same rules for
     * refresh and logout: a body token where only the cookie is accepted, or a cookie and a
     * body that differ, is a 400 (a logout that ignored the body token answered 204 and left
     * the session alive)
     */
    function presentedRefreshToken (request: FastifyRequest): { token: string | undefined, fromCookie: boolean } {
      const fromCookie = refreshCookie(request)
      const fromBody = bodyRefreshToken(request.body)
      if (fromBody !== undefined && !bodies) throw invalidRequest(ErrorCode.badRequest, 'refresh tokens are accepted in the cookie only')
      if (fromCookie !== undefined && fromBody !== undefined && fromCookie !== fromBody) {
        throw invalidRequest(ErrorCode.badRequest, 'two different refresh tokens were presented')
      }
      return { token: fromBody ?? fromCookie, fromCookie: fromCookie !== undefined }
    }

    scope.post('/auth/refresh', { onRequest: [enter('refresh'), guard(hasRefreshCookie)] }, async (request, reply) => {
      const { token: presented, fromCookie } = presentedRefreshToken(request)
      if (presented === undefined) throw invalidRequest(ErrorCode.badRequest, 'no refresh token was presented')
      try {
        sendPair(request, reply, await service.refresh(presented, client(request)))
      } catch (err) {
        // a dead refresh token in a cookie is useless: clear it so the browser stops sending it
        if ((err as { code?: string }).code === ErrorCode.invalidGrant && fromCookie) clearRefreshCookie(reply)
        throw err
      }
    })

    scope.post('/auth/logout', { onRequest: [enter('logout'), guard(hasRefreshCookie)] }, async (request, reply) => {
      const { token: presented } = presentedRefreshToken(request)
      // nothing to log out by: where refresh tokens travel in bodies only, the client always
      // has its token, so an empty logout is a client's mistake (a typo) that must not pass as
      // a 204; with the cookie, a browser cannot know its HttpOnly cookie expired, so an empty
      // logout stays a 204 that clears it (fix-logout-that-ends-nothing)
      if (!cookies && presented === undefined && request.headers.authorization === undefined) {
        throw invalidRequest(ErrorCode.badRequest, 'no refresh token or access token was presented: nothing was logged out')
      }
      // The refresh token proves its session and ends it. An access token sent beside it names
      // what else to revoke only when it passes authenticate (verified and not revoked: issue 9
      // item 3). One refused there (revoked, expired, forged) is a 401 when it came alone, and
      // is ignored — never used — beside a refresh token: a logout the client can prove must not
      // fail, leaving the session and its cookie alive, because an operator revoked the access
      // token the SDK still sends (fix-logout-refused-beside-refresh-token). A malformed request
      // (400: two Authorization headers…) is refused whatever came with it.
      let token: VerifiedToken | undefined
      try {
        token = await accessToken(request)
      } catch (err) {
        if (presented === undefined || (err as { statusCode?: unknown }).statusCode !== 401) throw err
      }
      await service.logout(presented, token === undefined ? undefined : revocableClaims(token), token === undefined || token.issuer === SELF_ISSUER ? undefined : token.issuer)
      clearRefreshCookie(reply)
      granted(request, token?.sub)
      reply.code(204).header('cache-control', 'no-store').send()
    })

    scope.post('/auth/logout-all', { onRequest: [enter('logout-all'), guard(() => false)] }, async (request, reply) => {
      // "log out everywhere" needs a valid, unrevoked access token of our own: it names the user
      const token = await accessToken(request)
      if (token === undefined) throw missingToken()
      // (the gateway's own tokens always carry a sub: SelfIssuer requires it)
      if (token.issuer !== 'self' || token.sub === undefined) throw new GatewayError(ErrorCode.tokenIssuerNotAllowed, 401, 'log out everywhere needs an access token issued by this gateway', { oauthError: 'invalid_token' })
      const cutOffSec = await service.logoutAll(token.sub)
      // the cut-off covers every token issued up to this second, inclusive (`iat` has whole
      // seconds: src/sessions/revoke.ts): the answer waits for the next second, so a login
      // the client makes once it has it gets tokens after the cut-off — without the wait, a
      // login in the same second got access tokens already revoked (fix-logout-all-same-second)
      const waitMs = (cutOffSec + 1) * 1000 - clock()
      if (waitMs > 0) await new Promise(resolve => setTimeout(resolve, Math.min(waitMs, 1000)))
      clearRefreshCookie(reply)
      granted(request, token.sub)
      reply.code(204).header('cache-control', 'no-store').send()
    })
  })
}, { name: 'portcullis-sessions', fastify: '5.x', dependencies: ['portcullis-errors', 'portcullis-edge'] })

function granted (request: FastifyRequest, sub: string | undefined): void {
  request.auth.granted = true
  request.auth.reason = Reason.granted
  request.auth.sub = sub
}
