import fp from 'fastify-plugin'
import type { FastifyPluginAsync } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { Pool } from 'undici'
import type { FastifyReply, FastifyRequest, RawServerBase, RouteGenericInterface } from 'fastify'
import type { IncomingHttpHeaders } from 'node:http'
import { HTTP_METHODS } from '../config/schema.js'
import type { GatewayConfig } from '../src/config/types.js'
import { ErrorCode, GatewayError } from '../src/errors.js'
import { compilePolicy } from '../src/pipeline/authorize.js'
import type { HeaderRewriter, RequestFacts } from '../src/pipeline/headers.js'

export interface ProxyPluginOptions {
  config: GatewayConfig
  rewriter: HeaderRewriter
}

type AnyRequest = FastifyRequest<RouteGenericInterface, RawServerBase>

// below common upstream keep-alive timeouts (Node's 5 s), so the pool never reuses a socket
// the upstream is closing (TOOLCHAIN: undici pool tips)
const UPSTREAM_KEEP_ALIVE_MS = 4000

/**
 * One @fastify/http-proxy per route, one keep-alive undici pool per upstream origin shared
 * by the routes that use it. The route's compiled policy rides in its route config, where the
 * auth hook reads it. Bodies stream both ways; headers change only in `rewriteRequestHeaders`.
 */
export default fp(async function proxy (app, opts: ProxyPluginOptions) {
  const { config, rewriter } = opts
  const pools = new Map<string, Pool>()
  app.addHook('onClose', async () => { await Promise.all([...pools.values()].map(p => p.close())) })

  const facts = (request: AnyRequest, upgrade = false): RequestFacts => ({
    peerAddress: request.socket.remoteAddress ?? '',
    protocol: request.protocol,
    host: request.headers.host,
    requestId: request.id,
    identity: request.auth?.token?.identity,
    upgrade,
  })

  for (const route of config.routes) {
    let pool = pools.get(route.upstreamOrigin)
    if (pool === undefined) {
      pool = new Pool(route.upstreamOrigin, {
        connections: route.connections,
        pipelining: 1,
        keepAliveTimeout: UPSTREAM_KEEP_ALIVE_MS,
        keepAliveMaxTimeout: UPSTREAM_KEEP_ALIVE_MS,
      })
      pools.set(route.upstreamOrigin, pool)
    }
    await app.register(httpProxy as unknown as FastifyPluginAsync<Record<string, unknown>>, {
      upstream: route.upstreamOrigin,
      prefix: route.prefix,
      rewritePrefix: route.rewritePrefix,
      // every method is routed so that one outside `methods` reaches the auth hook's 405
      // (registering only `methods` made the router answer 404 route_not_found instead)
      httpMethods: [...HTTP_METHODS],
      config: { policy: compilePolicy(route) },
      undici: pool as never, // a shared Pool instance; reply-from accepts a Dispatcher
      disableRequestLogging: true, // the decision log line is the one line per request
      internalRewriteLocationHeader: true,
      websocket: route.websocket,
      wsClientOptions: route.websocket
        ? { rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: AnyRequest) => rewriter.request(request.headers, facts(request, true)) }
        : undefined,
      replyOptions: {
        timeout: route.timeoutMs,
        retriesCount: 1, // a stale keep-alive socket on an idempotent request is retried once
        rewriteRequestHeaders: (request: AnyRequest, headers: IncomingHttpHeaders) => rewriter.request(headers, facts(request)),
        rewriteHeaders: (headers: IncomingHttpHeaders, request: AnyRequest) => rewriter.response(headers, request.id),
        onError: (reply: FastifyReply, { error }: { error: Error }) => { reply.send(upstreamError(error)) },
      },
    })
  }
}, { name: 'portcullis-proxy', fastify: '5.x', dependencies: ['portcullis-auth'] })

/** The one place upstream failures become client errors: timeouts → 504, everything else → 502. */
export function upstreamError (err: Error): GatewayError {
  const status = (err as { statusCode?: number }).statusCode
  const code = (err as { code?: string }).code
  if (status === 504 || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new GatewayError(ErrorCode.upstreamTimeout, 504, 'the upstream service did not answer in time', { cause: err })
  }
  return new GatewayError(ErrorCode.upstreamUnavailable, 502, 'the upstream service is unavailable', { cause: err })
}
