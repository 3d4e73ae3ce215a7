import { METHODS, ServerResponse, type IncomingMessage } from 'node:http'
import { constants as h2, type Http2ServerRequest } from 'node:http2'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import type { FastifyBaseLogger, FastifyReply, FastifyRequest } from 'fastify'
import fp from 'fastify-plugin'
import { ErrorCode, GATEWAY_ERROR_HEADER, REQUEST_TIMEOUT_MESSAGE, type GatewayError } from '../src/errors.js'
import { checkRequest } from '../src/pipeline/edge.js'
import { corsBeforeRoute } from '../src/pipeline/pipeline.js'
import { newAuthState, type AuthState } from '../src/pipeline/auth-state.js'
import type { Runtime, RuntimeHolder } from '../src/runtime.js'
import { kExpectsContinue } from '../src/proxy/exchange.js'
import { kUpgrade, type PendingUpgrade } from '../src/proxy/websocket.js'

/**
 * Where every request enters, the gateway's own endpoints included: it takes the Runtime in
 * force (a reload in the meantime does not change this request's), starts the decision
 * state, and runs the edge stage (src/pipeline/edge.ts). Two raw-server events are routed
 * into the same path: a WebSocket upgrade (so an upgrade walks the same stages as any request)
 * and `Expect: 100-continue` (answered only once the request is authorized, exchange.ts).
 */
export default fp(async function edge (app, opts: { holder: RuntimeHolder, requestTimeoutMs: number }) {
  const { holder, requestTimeoutMs } = opts
  const answeredLog = answeredLogger(app.log)
  // set on every request by the hook below, before anything reads them
  app.decorateRequest('runtime', undefined as unknown as Runtime)
  app.decorateRequest('auth', undefined as unknown as AuthState)
  app.decorateRequest('passed', undefined)
  app.decorateRequest('acceptedAt', 0)

  app.addHook('onRequest', (request, reply, done) => {
    request.acceptedAt = performance.now()
    request.runtime = holder.current
    request.auth = newAuthState()
    try {
      checkRequest(request.raw, (request.raw as { [kUpgrade]?: PendingUpgrade })[kUpgrade] !== undefined)
    } catch (err) {
      restoreUnknownMethod(request.raw)
      request.auth.reason = (err as GatewayError).code
      corsBeforeRoute(request.runtime, request, reply)
      done(err as GatewayError)
      return
    }
    if (request.raw.httpVersionMajor === 2 && !request.raw.complete && requestTimeoutMs > 0) untilWhole(request, reply, requestTimeoutMs, answeredLog)
    done()
  })

  // HTTP/2 carries any token as a method (`FOO`, `delete`), where HTTP/1.1's parser refuses
  // those Fastify does not know. Fastify's router has no route for them, not even a 404
  // handler: it wrote two warn lines a request ("likely a fastify bug" and its route tree)
  // and no decision line (fix-unknown-method-over-h2). Such a request is routed under one
  // method Fastify knows and the gateway never forwards, and restored at once
  // (restoreUnknownMethod), so it is refused like any method the gateway does not forward
  // (plugins/proxy.ts). HTTP/2 listeners only. Every method Node's HTTP/1.1 parser admits
  // (WebDAV's, PURGE…) is made routable too, for the same refusal: Fastify knows only the
  // standard ones by default, and sent the others to its 404.
  for (const method of METHODS) {
    if (method !== 'CONNECT' && !app.supportedMethods.includes(method)) app.addHttpMethod(method, { hasBody: true })
  }
  if (app.initialConfig.http2 === true) {
    const known = new Set(app.supportedMethods)
    const [route] = app.server.listeners('request') as Array<(req: IncomingMessage, res: ServerResponse) => void>
    app.server.removeListener('request', route!)
    app.server.on('request', (req: IncomingMessage & { [kUnknownMethod]?: string }, res: ServerResponse) => {
      if (!known.has(req.method as string)) {
        req[kUnknownMethod] = req.method
        req.method = UNKNOWN_METHOD
      }
      route!(req, res)
    })
  }

  // Node answers 100 Continue by itself unless someone listens: the gateway listens, so an
  // unauthenticated client is never told to send its body (issue 8, item 8)
  app.server.on('checkContinue', (req: IncomingMessage & { [kExpectsContinue]?: boolean }, res: ServerResponse) => {
    req[kExpectsContinue] = true
    app.server.emit('request', req, res)
  })

  app.server.on('upgrade', (req: IncomingMessage & { [kUpgrade]?: PendingUpgrade }, socket: Duplex, head: Buffer) => {
    socket.on('error', () => { socket.destroy() })
    // a stand-in response, so a refused upgrade gets the same JSON answer as any request
    const res = new ServerResponse(req)
    res.assignSocket(socket as import('node:net').Socket)
    // the socket ends with a refusal (below): say so, rather than Node's default keep-alive
    // that left a client's next request on it unanswered (fix-refused-upgrade-says-close)
    res.shouldKeepAlive = false
    const pending: PendingUpgrade = { socket, head, res, upgraded: false }
    req[kUpgrade] = pending
    res.on('finish', () => { if (!pending.upgraded) socket.destroy() })
    app.routing(req, res)
  })
}, { name: 'portcullis-edge', fastify: '5.x' })

const REQUEST_TIMEOUT_BODY = JSON.stringify({ statusCode: 408, code: ErrorCode.requestTimeout, message: REQUEST_TIMEOUT_MESSAGE })

/**
 * server.requestTimeout for an HTTP/2 request: Node applies it to HTTP/1.1 connections only,
 * and an HTTP/2 session's own timeout restarts with every frame — a stream trickling its body
 * a byte at a time stayed open for ever, holding an upstream connection, and one connection's
 * 128 streams held a whole route's pool (503 upstream_busy for everyone else:
 * fix-h2-request-timeout). Once the time is up and the body is still not whole: a 408 as over
 * HTTP/1.1 when nothing was answered yet, then the stream is reset (RFC 9113 §8.1: the client
 * may stop sending); an answer already under way is cut off (CANCEL). Only HTTP/2 requests
 * whose body is still coming pay for the timer.
 */
function untilWhole (request: FastifyRequest, reply: FastifyReply, timeoutMs: number, answeredLog: FastifyBaseLogger): void {
  const req = request.raw as unknown as Http2ServerRequest
  const res = reply.raw
  const timer = setTimeout(() => {
    if (req.complete || res.destroyed) return
    request.auth.reason = ErrorCode.requestTimeout
    const stream = req.stream
    if (res.headersSent) { stream.close(h2.NGHTTP2_CANCEL); return }
    // answered here, behind Fastify's back: its body reader and the proxy exchange still end the
    // request with reply.send() once the stream is reset
    request.log = reply.log = answeredLog
    res.writeHead(408, {
      'content-type': 'application/json; charset=utf-8',
      'content-length': Buffer.byteLength(REQUEST_TIMEOUT_BODY),
      'cache-control': 'no-store',
      [GATEWAY_ERROR_HEADER]: ErrorCode.requestTimeout,
      'x-request-id': request.id,
    })
    res.end(REQUEST_TIMEOUT_BODY, () => { if (!stream.closed) stream.close(h2.NGHTTP2_NO_ERROR) })
  }, Math.max(0, Math.ceil(timeoutMs - (performance.now() - request.acceptedAt))))
  const clear = (): void => { clearTimeout(timer) }
  req.once('end', clear)
  res.once('close', clear)
}

/**
 * The logger of a request the edge has answered itself (the HTTP/2 408 above). Fastify's body
 * reader and the proxy exchange still end such a request with reply.send(), and each logged
 * "Reply was already sent" at warn with a stack: a client could write 128 such lines per
 * connection every requestTimeout (fix-h2-timeout-logs-stacks). Those lines, and only those,
 * are dropped; made once, at boot.
 */
function answeredLogger (log: FastifyBaseLogger): FastifyBaseLogger {
  const view = Object.create(log) as FastifyBaseLogger
  const alreadySent = (obj: unknown): boolean =>
    (obj as { err?: { code?: unknown } } | null)?.err?.code === 'FST_ERR_REP_ALREADY_SENT' ||
    (typeof obj === 'string' && obj.startsWith('Reply was already sent'))
  Object.defineProperty(view, 'warn', {
    value: (obj: unknown, ...rest: unknown[]): void => { if (!alreadySent(obj)) (log.warn as (...a: unknown[]) => void)(obj, ...rest) },
  })
  return view
}

/** the method an HTTP/2 request with a method Fastify does not know is routed under: one the gateway never forwards, without a body */
const UNKNOWN_METHOD = 'TRACE'
const kUnknownMethod = Symbol('portcullis.unknownMethod')

/** the request's own method back, once it is routed (the decision line names what was sent) */
export function restoreUnknownMethod (req: IncomingMessage): void {
  const sent = (req as IncomingMessage & { [kUnknownMethod]?: string })[kUnknownMethod]
  if (sent !== undefined) req.method = sent
}

declare module 'fastify' {
  interface FastifyRequest {
    /** the configuration in force when the request arrived */
    runtime: Runtime
    /** the access decision so far; read by the decision log and the metrics */
    auth: AuthState
    /** performance.now() when the gateway accepted the request (the route timeout counts from it) */
    acceptedAt: number
  }
}
