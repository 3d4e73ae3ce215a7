import fp from 'fastify-plugin'
import type { FastifyPluginAsync, FastifyReply, FastifyRequest, onRequestHookHandler, RawServerBase, RouteGenericInterface } from 'fastify'
import httpProxy from '@fastify/http-proxy'
import { Pool, type Dispatcher } from 'undici'
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import { HTTP_METHODS } from '../config/schema.js'
import type { GatewayConfig, RouteConfig } from '../src/config/types.js'
import { ErrorCode, GatewayError, routeNotFound } from '../src/errors.js'
import { compilePolicy } from '../src/pipeline/authorize.js'
import type { HeaderRewriter, RequestFacts } from '../src/pipeline/headers.js'
import { UpstreamPath } from '../src/pipeline/upstream-path.js'
import { RouteTable } from '../src/pipeline/route-table.js'

export interface ProxyPluginOptions {
  config: GatewayConfig
  rewriter: HeaderRewriter
}

type AnyRequest = FastifyRequest<RouteGenericInterface, RawServerBase>

// below common upstream keep-alive timeouts (Node's 5 s), so the pool never reuses a socket
// the upstream is closing (TOOLCHAIN: undici pool tips)
const UPSTREAM_KEEP_ALIVE_MS = 4000
// a request without a body that met a stale keep-alive socket is sent again, once
const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE'])
const STALE_SOCKET = new Set(['UND_ERR_SOCKET', 'ECONNRESET'])

/**
 * The last stage: requests that passed their route's guard go to the upstream.
 *
 * Plain HTTP routes are forwarded by `Exchange` below, straight on a keep-alive undici
 * `Pool` (one per upstream origin, shared by the routes that use it): the request streams
 * to the upstream with the rewritten headers, and the upstream's answer streams back into
 * the client response. Everything per route (policy, guard, target path, pool) is built
 * here at boot. This replaced @fastify/http-proxy on these routes: its per-request URL
 * parsing and header copies cost more than the whole auth layer (bench/README.md).
 *
 * WebSocket routes stay on @fastify/http-proxy, which owns the server's `upgrade` event;
 * their guard and header rewriting are the same.
 */
export default fp(async function proxy (app, opts: ProxyPluginOptions) {
  const { config, rewriter } = opts
  const pools = new Map<string, Pool>()
  app.addHook('onClose', async () => { await Promise.all([...pools.values()].map(p => p.close())) })
  const poolFor = (route: RouteConfig): Pool => {
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
    return pool
  }

  // Plain routes are found in a RouteTable by one catch-all Fastify route: memory and match
  // time stay flat with thousands of routes (a Fastify route per prefix cost ~50 KiB each).
  // A plain route nested under a WebSocket route's prefix gets Fastify routes of its own,
  // since the router would otherwise hand its requests to the WebSocket route.
  const table = new RouteTable<onRequestHookHandler>()
  const wsPrefixes = config.routes.filter(r => r.websocket).map(r => r.prefix.toLowerCase())
  await app.register(async function plainRoutes (scope) {
    // bodies are not parsed: they stream through
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', passBodyThrough)
    scope.decorateRequest('upstream', undefined)
    for (const route of config.routes) {
      if (route.websocket) continue
      const target: UpstreamTarget = {
        origin: route.upstreamOrigin,
        pool: poolFor(route),
        path: new UpstreamPath(route.prefix, route.rewritePrefix),
        timeoutMs: route.timeoutMs,
        rewriter,
      }
      const guard = app.guard(compilePolicy(route))
      const onRequest: onRequestHookHandler = function (request, reply, done) {
        request.upstream = target
        guard.call(this, request, reply, done)
      }
      if (wsPrefixes.some(ws => isUnder(route.prefix.toLowerCase(), ws))) {
        // every method is routed, so that one outside `methods` reaches the guard's 405
        for (const url of [route.prefix, route.prefix + '/*']) scope.route({ method: [...HTTP_METHODS], url, onRequest, handler: forwardUpstream })
      } else {
        table.add(route.prefix, onRequest)
      }
    }
    if (table.size > 0) {
      scope.route({
        method: [...HTTP_METHODS],
        url: '/*',
        onRequest (request, reply, done) {
          const onRequest = table.match(request.url)
          if (onRequest === undefined) { done(routeNotFound()); return }
          onRequest.call(this, request, reply, done)
        },
        handler: forwardUpstream,
      })
    }
  })

  for (const route of config.routes) {
    if (!route.websocket) continue
    await app.register(async function webSocketRoute (scope) {
      scope.addHook('onRequest', app.guard(compilePolicy(route)))
      await scope.register(httpProxy as unknown as FastifyPluginAsync<Record<string, unknown>>, {
        upstream: route.upstreamOrigin,
        prefix: route.prefix,
        rewritePrefix: route.rewritePrefix,
        httpMethods: [...HTTP_METHODS],
        undici: poolFor(route) as never, // a shared Pool instance; reply-from accepts a Dispatcher
        disableRequestLogging: true, // the decision log line is the one line per request
        internalRewriteLocationHeader: true,
        websocket: true,
        wsClientOptions: { rewriteRequestHeaders: (_headers: IncomingHttpHeaders, request: AnyRequest) => rewriter.request(request.headers, facts(request, true)) },
        replyOptions: {
          timeout: route.timeoutMs,
          retriesCount: 1,
          rewriteRequestHeaders: (request: AnyRequest, headers: IncomingHttpHeaders) => rewriter.request(headers, facts(request)),
          rewriteHeaders: (headers: IncomingHttpHeaders, request: AnyRequest) => rewriter.response(headers, request.id),
          onError: (reply: FastifyReply, { error }: { error: Error }) => { reply.send(upstreamError(error)) },
        },
      })
    })
  }
}, { name: 'portcullis-proxy', fastify: '5.x', dependencies: ['portcullis-auth'] })

declare module 'fastify' {
  interface FastifyRequest {
    /** the upstream of the plain route that matched, set by its onRequest hook */
    upstream: UpstreamTarget | undefined
  }
}

function forwardUpstream (request: FastifyRequest, reply: FastifyReply): void {
  new Exchange(request.upstream as UpstreamTarget, request, reply).send()
}

/** `prefix` equals `parent` or lies below it, by whole segments */
function isUnder (prefix: string, parent: string): boolean {
  return parent === '/' || prefix === parent || prefix.startsWith(parent + '/')
}

/** What forwarding a route's requests needs, built at boot. */
export interface UpstreamTarget {
  origin: string
  pool: Pool
  path: UpstreamPath
  timeoutMs: number
  rewriter: HeaderRewriter
}

function passBodyThrough (_request: FastifyRequest, payload: IncomingMessage, done: (err: Error | null, body?: unknown) => void): void {
  done(null, payload)
}

function facts (request: AnyRequest, upgrade = false): RequestFacts {
  return {
    peerAddress: request.socket.remoteAddress ?? '',
    protocol: request.protocol,
    host: request.headers.host,
    requestId: request.id,
    identity: request.auth?.token?.identity,
    upgrade,
  }
}

/**
 * One request in flight, as undici's dispatch handler: the upstream's status and headers
 * are written to the client response as they arrive, then the body chunk by chunk with
 * backpressure both ways. If the client goes away, the upstream request is aborted.
 */
class Exchange implements Dispatcher.DispatchHandler {
  readonly #target: UpstreamTarget
  readonly #request: FastifyRequest
  readonly #reply: FastifyReply
  readonly #options: Dispatcher.DispatchOptions
  /** a request without a body that met a stale keep-alive socket may be sent once more */
  #retryable: boolean
  #controller: Dispatcher.DispatchController | undefined = undefined
  #started = false
  #done = false

  constructor (target: UpstreamTarget, request: FastifyRequest, reply: FastifyReply) {
    this.#target = target
    this.#request = request
    this.#reply = reply
    const body = request.body === undefined ? null : request.body as IncomingMessage
    this.#retryable = body === null && IDEMPOTENT.has(request.method)
    this.#options = {
      origin: target.origin,
      path: target.path.map(request.url),
      method: request.method as Dispatcher.HttpMethod,
      headers: target.rewriter.request(request.headers, facts(request)) as Record<string, string | string[]>,
      body,
      headersTimeout: target.timeoutMs,
      bodyTimeout: target.timeoutMs,
    }
    reply.raw.once('close', () => { if (!this.#done) this.#controller?.abort(new ClientGoneError()) })
  }

  send (): void {
    this.#target.pool.dispatch(this.#options, this)
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    if (this.#done || this.#reply.raw.destroyed) controller.abort(new ClientGoneError())
    else this.#controller = controller
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (statusCode < 200) return // interim answers stay between the gateway and the upstream
    const res = this.#reply.raw
    const list = this.#target.rewriter.responseList(headers, this.#request.id, this.#target.path)
    // the client's body was not all read: the connection cannot carry another request
    if (!this.#request.raw.complete) list.push('connection', 'close')
    try {
      res.writeHead(statusCode, list as string[])
    } catch (err) {
      // Node refused a header the upstream sent; nothing was written yet
      this.#done = true
      controller.abort(err as Error)
      this.#reply.send(new GatewayError(ErrorCode.upstreamUnavailable, 502, 'the upstream service sent an invalid response', { cause: err }))
      return
    }
    this.#started = true
    this.#reply.hijack() // the response is ours now; Fastify still runs the onResponse hooks
    res.on('drain', () => { controller.resume() })
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.#reply.raw.write(chunk)) controller.pause()
  }

  onResponseEnd (): void {
    this.#done = true
    this.#reply.raw.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    if (this.#done) return
    const res = this.#reply.raw
    if (this.#started || res.destroyed) {
      this.#done = true
      res.destroy() // mid-body: the client must see the response break, not a short one
      return
    }
    if (this.#retryable && STALE_SOCKET.has((err as { code?: string }).code ?? '')) {
      this.#retryable = false
      this.#controller = undefined
      this.send()
      return
    }
    this.#done = true
    this.#reply.send(upstreamError(err))
  }
}

class ClientGoneError extends Error {
  constructor () { super('the client closed the connection') }
}

/** The one place upstream failures become client errors: timeouts → 504, everything else → 502. */
export function upstreamError (err: Error): GatewayError {
  const status = (err as { statusCode?: number }).statusCode
  const code = (err as { code?: string }).code
  if (status === 504 || code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'UND_ERR_HEADERS_TIMEOUT') {
    return new GatewayError(ErrorCode.upstreamTimeout, 504, 'the upstream service did not answer in time', { cause: err })
  }
  return new GatewayError(ErrorCode.upstreamUnavailable, 502, 'the upstream service is unavailable', { cause: err })
}
