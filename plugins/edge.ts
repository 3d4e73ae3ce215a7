import { ServerResponse, type IncomingMessage } from 'node:http'
import { performance } from 'node:perf_hooks'
import type { Duplex } from 'node:stream'
import fp from 'fastify-plugin'
import type { GatewayError } from '../src/errors.js'
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
export default fp(async function edge (app, opts: { holder: RuntimeHolder }) {
  const { holder } = opts
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
      request.auth.reason = (err as GatewayError).code
      corsBeforeRoute(request.runtime, request, reply)
      done(err as GatewayError)
      return
    }
    done()
  })

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
