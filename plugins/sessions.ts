import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { GatewayConfig } from '../src/config/types.js'
import { ErrorCode, GatewayError, invalidRequest } from '../src/errors.js'
import { extractBearer } from '../src/pipeline/extract.js'
import { createCookieRequestCheck, isJsonContentType } from '../src/sessions/csrf.js'
import type { AccessClaims, SessionService, TokenPair } from '../src/sessions/service.js'
import type { TokenVerifier } from '../src/tokens/verifier.js'

export interface SessionsPluginOptions {
  config: GatewayConfig
  service: SessionService
  verifier: TokenVerifier
  clock: () => number
}

const MAX_USERNAME_CHARS = 256

/**
 * The auth endpoints (DESIGN: the client's contract): login, refresh, logout, logout-all.
 * Cookie-carried requests are CSRF-checked (POST only, strict JSON, Origin allow-list or
 * same origin, Sec-Fetch-Site) before the body is read, so a refused request consumes nothing.
 */
export default fp(async function sessions (app, opts: SessionsPluginOptions) {
  const { config, service, verifier, clock } = opts
  const { transport, cookieName } = config.tokens.refresh
  const cookies = transport !== 'body'
  const bodies = transport !== 'cookie'
  const csrf = createCookieRequestCheck({ allowedOrigins: config.tokens.allowedOrigins })
  const cookieAttributes = 'Path=/; HttpOnly; Secure; SameSite=Strict'
  const clearCookie = `${cookieName}=; ${cookieAttributes}; Max-Age=0`

  // every method but POST is refused on the auth endpoints (a GET must never log anyone out)
  const notAllowed = (_request: FastifyRequest, reply: FastifyReply): void => {
    reply.header('allow', 'POST')
    throw new GatewayError(ErrorCode.methodNotAllowed, 405, 'only POST is allowed')
  }
  for (const url of ['/auth/login', '/auth/refresh', '/auth/logout', '/auth/logout-all']) {
    app.route({ method: ['GET', 'HEAD', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'], url, handler: notAllowed })
  }

  /** runs before the body is parsed: strict JSON always; browser checks when a browser speaks */
  function checkRequest (request: FastifyRequest, cookieCarried: boolean): void {
    const h = request.headers
    if (cookieCarried || h.origin !== undefined || h['sec-fetch-site'] !== undefined) {
      const verdict = csrf({ method: request.method, contentType: h['content-type'], origin: h.origin, secFetchSite: h['sec-fetch-site'] as string | undefined, host: h.host, proto: request.protocol })
      if (!verdict.ok) throw new GatewayError(verdict.error.code, verdict.error.statusCode, verdict.error.message)
    } else if (!isJsonContentType(h['content-type'])) {
      throw new GatewayError(ErrorCode.unsupportedMediaType, 415, 'the body must be application/json')
    }
  }

  function refreshCookie (request: FastifyRequest): string | undefined {
    if (!cookies) return undefined
    const header = request.headers.cookie
    if (header === undefined || !header.includes(cookieName)) return undefined
    for (const pair of header.split(';')) {
      const eq = pair.indexOf('=')
      if (eq !== -1 && pair.slice(0, eq).trim() === cookieName) return pair.slice(eq + 1).trim()
    }
    return undefined
  }

  function sendPair (reply: FastifyReply, pair: TokenPair): void {
    const body: Record<string, unknown> = { access_token: pair.accessToken, token_type: pair.tokenType, expires_in: pair.expiresIn }
    const refreshMaxAgeSec = Math.max(0, Math.floor((pair.refreshExpiresAt.getTime() - clock()) / 1000))
    if (bodies) {
      body.refresh_token = pair.refreshToken
      body.refresh_expires_in = refreshMaxAgeSec
    }
    if (cookies) reply.header('set-cookie', `${cookieName}=${pair.refreshToken}; ${cookieAttributes}; Max-Age=${refreshMaxAgeSec}`)
    reply.header('cache-control', 'no-store').header('pragma', 'no-cache').send(body)
  }

  const client = (request: FastifyRequest): { ip: string, userAgent: string | undefined } => ({ ip: request.ip, userAgent: request.headers['user-agent'] })

  /** the verified claims of the request's access token, or undefined (absent, invalid or expired) */
  function accessClaims (request: FastifyRequest): AccessClaims | undefined {
    try {
      const raw = extractBearer(request.headers.authorization)
      return raw === undefined ? undefined : verifier.verify(raw, clock()).claims
    } catch {
      return undefined
    }
  }

  app.post('/auth/login', {
    onRequest: (request, _reply, done) => { checkRequest(request, false); done() },
  }, async (request, reply) => {
    const body = request.body as { username?: unknown, password?: unknown } | null
    if (body === null || typeof body !== 'object' || typeof body.username !== 'string' || typeof body.password !== 'string' ||
      body.username === '' || body.username.length > MAX_USERNAME_CHARS) {
      throw invalidRequest(ErrorCode.badRequest, 'the body must be {"username": "…", "password": "…"}')
    }
    sendPair(reply, await service.login(body.username, body.password, client(request)))
  })

  app.post('/auth/refresh', {
    onRequest: (request, _reply, done) => { checkRequest(request, refreshCookie(request) !== undefined); done() },
  }, async (request, reply) => {
    const fromCookie = refreshCookie(request)
    const body = request.body as { refresh_token?: unknown } | null | undefined
    const fromBody = typeof body?.refresh_token === 'string' ? body.refresh_token : undefined
    if (fromBody !== undefined && !bodies) throw invalidRequest(ErrorCode.badRequest, 'refresh tokens are accepted in the cookie only')
    if (fromCookie !== undefined && fromBody !== undefined && fromCookie !== fromBody) {
      throw invalidRequest(ErrorCode.badRequest, 'two different refresh tokens were presented')
    }
    const presented = fromBody ?? fromCookie
    if (presented === undefined) throw invalidRequest(ErrorCode.badRequest, 'no refresh token was presented')
    try {
      sendPair(reply, await service.refresh(presented, client(request)))
    } catch (err) {
      // a dead refresh token in a cookie is useless: clear it so the browser stops sending it
      if ((err as { code?: string }).code === 'invalid_grant' && fromCookie !== undefined) reply.header('set-cookie', clearCookie)
      throw err
    }
  })

  app.post('/auth/logout', {
    onRequest: (request, _reply, done) => { checkRequest(request, refreshCookie(request) !== undefined); done() },
  }, async (request, reply) => {
    const body = request.body as { refresh_token?: unknown } | null | undefined
    const fromBody = bodies && typeof body?.refresh_token === 'string' ? body.refresh_token : undefined
    await service.logout(fromBody ?? refreshCookie(request), accessClaims(request))
    if (cookies) reply.header('set-cookie', clearCookie)
    reply.code(204).header('cache-control', 'no-store').send()
  })

  app.post('/auth/logout-all', {
    onRequest: (request, _reply, done) => { checkRequest(request, false); done() },
  }, async (request, reply) => {
    // "log out everywhere" needs a valid access token: it names the user
    const raw = extractBearer(request.headers.authorization)
    if (raw === undefined) throw new GatewayError(ErrorCode.missingToken, 401, 'an access token is required')
    const token = verifier.verify(raw, clock())
    await service.logoutAll(token.sub)
    if (cookies) reply.header('set-cookie', clearCookie)
    reply.code(204).header('cache-control', 'no-store').send()
  })
}, { name: 'portcullis-sessions', fastify: '5.x', dependencies: ['portcullis-errors'] })
