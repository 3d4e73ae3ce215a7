import type { IncomingMessage } from 'node:http'
import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { HTTP_METHODS } from '../config/schema.js'
import { badRequest, ErrorCode, type GatewayError } from '../src/errors.js'
import { runPipeline, unforwardedMethod } from '../src/pipeline/pipeline.js'
import { restoreUnknownMethod } from './edge.js'
import type { RequestFacts } from '../src/pipeline/headers.js'
import { forward } from '../src/proxy/exchange.js'
import { forwardWebSocket, kUpgrade, type WebSocketTarget } from '../src/proxy/websocket.js'

/**
 * Every proxied route, plain and WebSocket: one catch-all Fastify route whose onRequest runs
 * the pipeline (src/pipeline/pipeline.ts: match → CORS → method → authenticate → authorize)
 * and whose handler forwards (src/proxy/). Routes live in the Runtime's RouteTable, matched
 * by whole segments in one Map lookup per path segment, so memory and match time stay flat
 * with thousands of routes, and a reload swaps them all at once. The gateway's own endpoints
 * (/auth/*, /.well-known/jwks.json) are Fastify routes of their own and match first.
 */
export default fp(async function proxy (app, opts: { clock: () => number }) {
  const { clock } = opts
  await app.register(async function proxiedRoutes (scope) {
    // bodies are not parsed: they stream through
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', passBodyThrough)
    scope.route({
      method: [...HTTP_METHODS],
      url: '/*',
      onRequest (request, reply, done) {
        const state = request.auth
        try {
          const outcome = runPipeline(request, reply, request.runtime, state, clock())
          if (outcome instanceof Promise) {
            outcome.then(() => { done() }, (err: GatewayError) => { refused(request, err); done(err) })
            return
          }
          if (outcome === 'answered') return
        } catch (err) {
          refused(request, err as GatewayError)
          done(err as GatewayError)
          return
        }
        done()
      },
      handler: forwardUpstream,
    })
    // Methods Fastify routes that the gateway never forwards — WebDAV's PROPFIND and MKCOL,
    // TRACE, PURGE, QUERY… and, over HTTP/2, any other (plugins/edge.ts): a route's rules
    // name only HTTP_METHODS, so none of them could be authorized. 405 with the route's
    // `Allow`, 404 where no route matches; before, they were a 404 on every path, and an
    // unknown one over HTTP/2 wrote warn lines and no decision (fix-unknown-method-over-h2)
    scope.route({
      method: app.supportedMethods.filter(m => !(HTTP_METHODS as readonly string[]).includes(m) && m !== 'CONNECT'),
      url: '/*',
      onRequest (request, reply, done) {
        restoreUnknownMethod(request.raw)
        const err = unforwardedMethod(request, reply, request.runtime, request.auth)
        refused(request, err)
        done(err)
      },
      handler: () => { throw new Error('unreachable: every request is refused in onRequest') },
    })
  })
}, { name: 'portcullis-proxy', fastify: '5.x', dependencies: ['portcullis-edge'] })

function refused (request: FastifyRequest, err: GatewayError): void {
  request.auth.granted = false
  request.auth.reason = err.code ?? ErrorCode.internal
}

/** the rewrite and proxy stages: the upstream-bound headers, then the exchange */
function forwardUpstream (request: FastifyRequest, reply: FastifyReply): void {
  const { runtime, route, cors } = request.passed!
  const token = request.auth.token
  const upstream = route.upstream
  let extra: Array<readonly [string, string]> | undefined
  const audience = route.config.assertionAudience
  if (audience !== undefined && token !== undefined && runtime.assertions !== undefined) {
    extra = [[runtime.config.identity.assertion!.header, runtime.assertions.assertion(token, audience)]]
  }
  const facts: RequestFacts = {
    peerAddress: request.socket.remoteAddress ?? '',
    protocol: request.protocol,
    host: request.host,
    // preserveHost: the client's own Host (HTTP/2: its :authority), never a forwarded one
    upstreamHost: upstream.upstreamHost ?? request.headers.host ?? (request.headers[':authority'] as string | undefined) ?? new URL(upstream.origin).host,
    requestId: request.id,
    identity: token?.identity,
    extra,
  }
  if ((request.raw as { [kUpgrade]?: unknown })[kUpgrade] !== undefined) {
    if (!route.config.websocket) throw badRequest(ErrorCode.badRequest, 'this route does not accept WebSocket upgrades')
    forwardWebSocket(upstream as WebSocketTarget, request, reply, { facts, cors }, token)
    return
  }
  forward(upstream, request, reply, { facts, cors })
}

function passBodyThrough (_request: FastifyRequest, payload: IncomingMessage, done: (err: Error | null, body?: unknown) => void): void {
  done(null, payload)
}
