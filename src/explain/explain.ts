import { IncomingMessage, METHODS } from 'node:http'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { pino } from 'pino'
import { HTTP_METHODS, type GatewayConfig } from '../config/types.js'
import { CONNECT_REFUSED_MESSAGE, ErrorCode, GatewayError } from '../errors.js'
import { newAuthState } from '../pipeline/auth-state.js'
import type { Authenticator } from '../pipeline/authenticate.js'
import { checkRequest } from '../pipeline/edge.js'
import { Denylist } from '../pipeline/denylist.js'
import { HeaderRewriter, type RequestFacts } from '../pipeline/headers.js'
import { runPipeline, unforwardedMethod } from '../pipeline/pipeline.js'
import { trustFunction } from '../pipeline/trust.js'
import { payloadTooLarge } from '../proxy/errors.js'
import { LiveSockets } from '../proxy/live-sockets.js'
import { PoolRegistry } from '../proxy/pools.js'
import { compileRuntime, KeySetRegistry, type CompiledRoute, type Runtime } from '../runtime.js'
import { GENERATED_REQUEST_ID, type PipelineRequest, RecordingReply, WS_HANDSHAKE, forwarded, gatewayEndpoint, incomingMessage, isUpgrade, requestHeaders, splitUrl, transportHeaders, withAllow } from './request.js'
import { credentialsOf, verifyOffline } from './credentials.js'
import { closestRoutes, describeRoute, reasonText, refusal } from './describe.js'
import { HeaderRedactor } from './redact.js'

/**
 * `portcullis explain`: what the gateway would do with one request, without sending it and
 * without any network (no upstream, no identity provider, no database). It walks the real
 * stages with the compiled Runtime — checkRequest on a request object built by Node's own
 * header code, the gateway's endpoints, runPipeline (match → CORS → method → token in query →
 * authenticate → authorize), the body limit, the header rewriter and the path mapping — so it
 * cannot drift from the gateway; only what Fastify's router and the proxy handler do around
 * those stages is restated here, and marked where it is.
 */

export interface ExplainRequest {
  method: string
  /** an absolute URL (its host becomes Host) or a request target (`/api/orders?x=1`) */
  url: string
  /** -H lines as the client sends them, in order */
  headers: ReadonlyArray<readonly [string, string]>
  /** a bearer token: verified with the gateway's keys; an identity provider's is decoded only */
  token?: string | undefined
  /** claims of a token, taken as given (no signature) */
  claims?: Record<string, unknown> | undefined
  /** the TCP peer; server.trustProxy decides whether its forwarding headers count */
  peerAddress?: string | undefined
}

export interface Refusal { status: number, reason: string, message: string, scope?: string, allow?: string }

export type Outcome = 'proxied' | 'answered' | 'refused' | 'gateway'

export interface Explanation {
  request: { method: string, target: string, headers: Array<[string, string]> }
  edge: { passed: true } | ({ passed: false } & Refusal)
  /** one of the gateway's own endpoints took the request */
  endpoint: { path: string, name: string } | undefined
  route: { name: string, prefix: string, upstream: string, rewritePrefix: string } | undefined
  /** when no route matched: the prefixes closest to the path */
  closest: Array<{ name: string, prefix: string }> | undefined
  rule: Rule | undefined
  credentials: Credentials | undefined
  decision: { outcome: Outcome, status: number | undefined, reason: string, message: string | undefined, scope?: string, allow?: string }
  upstream: { method: string, url: string, headers: Array<[string, string]> } | undefined
  notes: string[]
}

export interface Rule {
  auth: string
  methods: string[] | '*'
  /** the method's scope rule and where it comes from: its own, GET's (HEAD), "*" */
  scope: { method: string, from: string | undefined, needs: string }
  issuers: string[]
  cors: boolean
  websocket: boolean
  assertion: string | undefined
}

export interface Credentials {
  source: 'authorization' | 'token' | 'claims'
  /** verified or invalid: by the gateway's verifier; claims-given / unverified: no signature was checked */
  check: 'verified' | 'claims-given' | 'unverified' | 'invalid'
  note: string
  issuer?: string
  sub?: string
  scopes?: string[]
  expiresAt?: string
  identity?: Array<[string, string]>
}

// a client address from the documentation range (RFC 5737): a peer no trustProxy list names
export const DEFAULT_PEER = '192.0.2.1'

/**
 * A Runtime compiled for explaining: identity-provider key sets that never fetch, an empty
 * denylist (revocations live in the store), pools that are never dispatched on.
 */
export function offlineRuntime (config: GatewayConfig, clock: () => number = Date.now): { runtime: Runtime, close: () => Promise<void> } {
  const denylist = new Denylist()
  const pools = new PoolRegistry()
  const keySets = new KeySetRegistry({ fetch: false })
  const runtime = compileRuntime(config, {
    pools,
    keySets,
    denylist,
    live: new LiveSockets(denylist, clock),
    trust: trustFunction(config.server.trustProxy),
    clock,
    logger: pino({ level: 'silent' }),
  })
  return { runtime, close: async () => { keySets.close(); await pools.close() } }
}

export async function explainRequest (runtime: Runtime, input: ExplainRequest, nowMs: number): Promise<Explanation> {
  const config = runtime.config
  const method = input.method
  const { target, host, notes } = splitUrl(input.url)
  const raw = requestHeaders(input, host)
  const redactor = new HeaderRedactor(config)
  const ex: Explanation = {
    request: { method, target: redactor.url(target), headers: raw.map(([n, v]) => [n, redactor.request(n, v)]) },
    edge: { passed: true },
    endpoint: undefined,
    route: undefined,
    closest: undefined,
    rule: undefined,
    credentials: undefined,
    decision: { outcome: 'refused', status: undefined, reason: '', message: undefined },
    upstream: undefined,
    notes,
  }
  const refuse = (err: unknown): Explanation => {
    const r = refusal(err)
    ex.decision = { outcome: 'refused', status: r.status, reason: r.reason, message: r.message, ...(r.scope === undefined ? {} : { scope: r.scope }), ...(r.allow === undefined ? {} : { allow: r.allow }) }
    return ex
  }

  // app.ts refuseConnect: a CONNECT never reaches the edge stage or a route
  if (method === 'CONNECT') {
    return refuse(Object.assign(new GatewayError(ErrorCode.methodNotAllowed, 405, CONNECT_REFUSED_MESSAGE), { allow: '' }))
  }

  // the edge stage, on a request whose headers Node's own code assembled from the raw lines
  let msg: IncomingMessage
  try {
    if (!METHODS.includes(method)) {
      ex.notes.push('over HTTP/2, which carries any token as a method, it would be refused as a method the gateway never forwards: 405 on a route, 404 elsewhere')
      throw new GatewayError(ErrorCode.badRequest, 400, `the request is malformed: Node's HTTP/1.1 parser refuses the method ${JSON.stringify(method.slice(0, 32))}`)
    }
    msg = incomingMessage(method, target, raw)
    checkRequest(msg)
  } catch (err) {
    ex.edge = { passed: false, ...refusal(err) }
    return refuse(err)
  }

  const endpoint = gatewayEndpoint(method, target)
  if (endpoint !== undefined) {
    ex.endpoint = endpoint
    if (endpoint.name.startsWith('auth.') && method !== 'POST') {
      return refuse(Object.assign(new GatewayError(ErrorCode.methodNotAllowed, 405, 'only POST is allowed'), { allow: 'POST' }))
    }
    ex.decision = { outcome: 'gateway', status: undefined, reason: 'gateway_endpoint', message: `${endpoint.path} is answered by the gateway itself, never proxied` }
    return ex
  }

  // the pipeline itself, with the verify step of the authenticate stage replaced only for
  // what cannot be checked offline (given claims; an identity provider's signature)
  const credentials: { current: Credentials | undefined } = { current: undefined }
  const authenticator: Authenticator = {
    verify: (token, now) => verifyOffline(runtime, input, token, now, credentials),
    denylist: runtime.authenticator.denylist,
  }
  const state = newAuthState()
  const request: PipelineRequest = { url: target, method, headers: msg.headers, passed: undefined, raw: { upgrade: isUpgrade(msg) } }
  const reply = new RecordingReply()
  let outcome: 'answered' | undefined
  try {
    // plugins/proxy.ts: the seven forwarded methods take the pipeline; the refusal route the rest
    if (!(HTTP_METHODS as readonly string[]).includes(method)) throw unforwardedMethod(request as unknown as FastifyRequest, reply as unknown as FastifyReply, runtime, state)
    outcome = await runPipeline(request as unknown as FastifyRequest, reply as unknown as FastifyReply, { ...runtime, authenticator }, state, nowMs)
  } catch (err) {
    describeRoute(ex, runtime, request.passed?.route, method)
    if (request.passed === undefined) ex.closest = closestRoutes(config, target)
    ex.credentials = credentialsOf(credentials.current, state.token)
    return refuse(withAllow(err, reply))
  }
  const route = request.passed?.route
  describeRoute(ex, runtime, route, method)
  ex.credentials = credentialsOf(credentials.current, state.token)
  if (outcome === 'answered') {
    ex.decision = { outcome: 'answered', status: reply.statusCode, reason: state.reason, message: 'a CORS preflight: answered by the gateway, never proxied' }
    return ex
  }
  const token = state.token
  const passed = route as CompiledRoute

  // the handler (plugins/proxy.ts forwardUpstream, exchange.ts): assertion, upgrade check, body limit, headers
  const audience = passed.config.assertionAudience
  let extra: Array<readonly [string, string]> | undefined
  if (audience !== undefined && token !== undefined && runtime.assertions !== undefined) {
    // signed as plugins/proxy.ts signs it (own keys, offline), so a token whose core claims
    // cannot fit identity.maxHeaderBytes is refused here as there; the value is not shown
    let bytes: number
    try {
      bytes = runtime.assertions.assertion(token, audience).length
    } catch (err) {
      return refuse(err)
    }
    extra = [[config.identity.assertion!.header, `<signed assertion, aud=${audience}, ${bytes} bytes>`]]
  }
  const upgrade = isUpgrade(msg)
  if (upgrade && !passed.config.websocket) return refuse(new GatewayError(ErrorCode.badRequest, 400, 'this route does not accept WebSocket upgrades'))
  const length = msg.headers['content-length']
  if (!upgrade && length !== undefined && Number(length) > passed.config.maxBodyBytes) return refuse(payloadTooLarge())

  const trust = trustFunction(config.server.trustProxy)
  const peer = input.peerAddress ?? DEFAULT_PEER
  const upstream = passed.upstream
  const facts: RequestFacts = {
    peerAddress: peer,
    protocol: forwarded(msg, trust, peer, 'x-forwarded-proto') ?? (config.server.tls === undefined ? 'http' : 'https'),
    host: forwarded(msg, trust, peer, 'x-forwarded-host') ?? msg.headers.host ?? '',
    upstreamHost: upstream.upstreamHost ?? msg.headers.host ?? new URL(upstream.origin).host,
    requestId: HeaderRewriter.requestId(msg.headers['x-request-id'], () => GENERATED_REQUEST_ID),
    identity: token?.identity,
    extra,
    ...(upgrade ? { upgrade: true } : {}),
  }
  const headers = runtime.rewriter.request(msg.headers, facts)
  if (upgrade) for (const h of WS_HANDSHAKE) delete headers[h]
  else transportHeaders(headers, method, msg.headers, passed.config.requestBuffering)
  const origin = upgrade ? upstream.origin.replace(/^http/, 'ws') : upstream.origin
  ex.upstream = { method, url: redactor.url(origin + upstream.path.map(target)), headers: redactor.flatten(headers) }
  ex.decision = { outcome: 'proxied', status: undefined, reason: state.reason, message: reasonText(state.reason) }
  if (upgrade) ex.notes.push('a WebSocket upgrade: ws writes its own handshake headers (sec-websocket-key, -version, upgrade, connection) and offers the client\'s subprotocols minus portcullis and the bearer one')
  if (facts.peerAddress === DEFAULT_PEER && input.peerAddress === undefined) ex.notes.push(`the client address is taken as ${DEFAULT_PEER} (--peer ADDR to change it)`)
  if (token !== undefined) ex.notes.push('revocation: not checked — the denylist lives in the store, which explain does not open')
  return ex
}
