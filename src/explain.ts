import { IncomingMessage, validateHeaderName, validateHeaderValue, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { parseArgs } from 'node:util'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { pino } from 'pino'
import { HTTP_METHODS, SELF_ISSUER, type GatewayConfig, type HttpMethod } from './config/types.js'
import { ErrorCode, GatewayError, invalidToken } from './errors.js'
import { readConfigOrReport, ruleFor, describeRule } from './check.js'
import { newAuthState, Reason } from './pipeline/auth-state.js'
import type { Authenticator } from './pipeline/authenticate.js'
import { checkRequest } from './pipeline/edge.js'
import { Denylist } from './pipeline/denylist.js'
import { HeaderRewriter, type RequestFacts } from './pipeline/headers.js'
import { runPipeline, type PassedRequest } from './pipeline/pipeline.js'
import { trustFunction, type TrustFunction } from './pipeline/trust.js'
import { payloadTooLarge } from './proxy/errors.js'
import { LiveSockets } from './proxy/live-sockets.js'
import { PoolRegistry } from './proxy/pools.js'
import { compileRuntime, KeySetRegistry, type CompiledRoute, type Runtime } from './runtime.js'
import { claimAt, identityHeaders } from './tokens/identity.js'
import { badClaim, isNumericDate } from './tokens/jwt-errors.js'
import { decodeSegment, splitToken } from './tokens/jwt-parts.js'
import type { VerifiedToken } from './tokens/verified-token.js'
import { checkTime } from './tokens/verifier.js'

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
const GENERATED_REQUEST_ID = '<generated per request>'
const CLAIMS_PLACEHOLDER = 'claims-given'
// Fastify routes these before the catch-all proxy route (plugins/sessions.ts, plugins/jwks.ts);
// `start` always opens the store, so the auth endpoints are always there
const AUTH_ENDPOINTS = ['login', 'refresh', 'logout', 'logout-all']
// proxy/websocket.ts: the client's handshake headers stay on its hop; ws writes the upstream's
const WS_HANDSHAKE = ['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept', 'upgrade', 'connection']

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
  const ex: Explanation = {
    request: { method, target, headers: raw.map(([n, v]) => [n, redact(config, n, v)]) },
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

  // the edge stage, on a request whose headers Node's own code assembled from the raw lines
  let msg: IncomingMessage
  try {
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
  const request: PipelineRequest = { url: target, method, headers: msg.headers, passed: undefined }
  const reply = new RecordingReply()
  let outcome: 'answered' | undefined
  try {
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

  // the handler (plugins/proxy.ts forwardUpstream, exchange.ts): upgrade check, body limit, headers
  const upgrade = isUpgrade(msg)
  if (upgrade && !passed.config.websocket) return refuse(new GatewayError(ErrorCode.badRequest, 400, 'this route does not accept WebSocket upgrades'))
  const length = msg.headers['content-length']
  if (!upgrade && length !== undefined && Number(length) > passed.config.maxBodyBytes) return refuse(payloadTooLarge())

  const trust = trustFunction(config.server.trustProxy)
  const peer = input.peerAddress ?? DEFAULT_PEER
  const upstream = passed.upstream
  const audience = passed.config.assertionAudience
  const extra: Array<readonly [string, string]> | undefined = audience !== undefined && token !== undefined && runtime.assertions !== undefined
    ? [[config.identity.assertion!.header, `<signed assertion, aud=${audience}>`]]
    : undefined
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
  else transportHeaders(headers, method, msg.headers)
  const origin = upgrade ? upstream.origin.replace(/^http/, 'ws') : upstream.origin
  ex.upstream = { method, url: origin + upstream.path.map(target), headers: flatten(config, headers) }
  ex.decision = { outcome: 'proxied', status: undefined, reason: state.reason, message: reasonText(state.reason) }
  if (upgrade) ex.notes.push('a WebSocket upgrade: ws writes its own handshake headers (sec-websocket-key, -version, upgrade, connection) and offers the client\'s subprotocols minus portcullis and the bearer one')
  if (facts.peerAddress === DEFAULT_PEER && input.peerAddress === undefined) ex.notes.push(`the client address is taken as ${DEFAULT_PEER} (--peer ADDR to change it)`)
  if (token !== undefined) ex.notes.push('revocation: not checked — the denylist lives in the store, which explain does not open')
  return ex
}

// ---------------------------------------------------------------------------------------
// the request as the gateway would receive it

/** target and Host from the URL as typed; the fragment stays with the client, as clients do */
function splitUrl (url: string): { target: string, host: string, notes: string[] } {
  const notes: string[] = []
  let rest = url
  let host = 'localhost'
  const abs = /^[A-Za-z][A-Za-z0-9+.-]*:\/\/([^/?#]*)(.*)$/.exec(url)
  if (abs !== null) {
    host = (abs[1] ?? '').replace(/^.*@/, '') // userinfo is never sent in Host
    rest = abs[2] ?? ''
    if (rest === '' || rest.startsWith('?') || rest.startsWith('#')) rest = '/' + rest
  }
  const hash = rest.indexOf('#')
  if (hash !== -1) {
    notes.push('the fragment (#…) is not sent by clients and was left out')
    rest = rest.slice(0, hash)
  }
  return { target: rest, host, notes }
}

function requestHeaders (input: ExplainRequest, host: string): Array<[string, string]> {
  const raw: Array<[string, string]> = input.headers.map(([n, v]) => [n, v])
  if (!raw.some(([n]) => n.toLowerCase() === 'host')) raw.unshift(['Host', host])
  if (input.token !== undefined) raw.push(['Authorization', `Bearer ${input.token}`])
  else if (input.claims !== undefined) raw.push(['Authorization', `Bearer ${CLAIMS_PLACEHOLDER}`])
  return raw
}

/**
 * An IncomingMessage with the headers Node's HTTP code makes of these raw lines: names lower
 * case, a second Host or Authorization dropped, other repeats joined (`_addHeaderLines` is
 * what the parser calls). A header the parser would refuse is a 400, as on the wire.
 */
function incomingMessage (method: string, target: string, raw: ReadonlyArray<readonly [string, string]>): IncomingMessage {
  for (const [name, value] of raw) {
    try {
      validateHeaderName(name)
      validateHeaderValue(name, value)
    } catch (err) {
      throw new GatewayError(ErrorCode.badRequest, 400, `the request is malformed: Node's HTTP parser refuses the header ${JSON.stringify(name)} (${(err as { code?: string }).code ?? 'invalid'})`)
    }
  }
  const msg = new IncomingMessage(undefined as unknown as Socket)
  const flat = raw.flatMap(([n, v]) => [n, v])
  ;(msg as unknown as { _addHeaderLines: (headers: string[], n: number) => void })._addHeaderLines(flat, flat.length)
  msg.method = method
  msg.url = target
  msg.httpVersionMajor = 1
  msg.httpVersionMinor = 1
  return msg
}

/** Fastify's router: the gateway's own routes match before the catch-all (case-insensitively) */
function gatewayEndpoint (method: string, target: string): { path: string, name: string } | undefined {
  const q = target.indexOf('?')
  const path = (q === -1 ? target : target.slice(0, q)).toLowerCase()
  const auth = /^\/auth\/([a-z-]+)$/.exec(path)
  if (auth !== null && AUTH_ENDPOINTS.includes(auth[1] as string)) return { path, name: `auth.${auth[1] as string}` }
  if (path === '/.well-known/jwks.json' && (method === 'GET' || method === 'HEAD')) return { path, name: 'jwks' }
  return undefined
}

/** the Node parser hands a request with Connection: upgrade and an Upgrade header to the upgrade path */
function isUpgrade (msg: IncomingMessage): boolean {
  const connection = msg.headers.connection
  return msg.headers.upgrade !== undefined && connection !== undefined && connection.split(',').some(t => t.trim().toLowerCase() === 'upgrade')
}

/** Fastify's request.protocol / request.host under trustProxy: the last entry of a trusted peer's header */
function forwarded (msg: IncomingMessage, trust: TrustFunction, peer: string, name: 'x-forwarded-proto' | 'x-forwarded-host'): string | undefined {
  const value = msg.headers[name]
  if (typeof value !== 'string' || value === '' || !trust(peer, 0)) return undefined
  const last = value.lastIndexOf(',')
  return last === -1 ? value.trim() : value.slice(last + 1).trim()
}

// undici lib/dispatcher/client-h1.js: the methods whose empty body is sent as content-length: 0
const EXPECTS_PAYLOAD = new Set(['POST', 'PUT', 'PATCH'])

/**
 * What the upstream pool's HTTP client (undici) writes itself, after the rewriter: Connection
 * (close after a HEAD, which undici never reuses a socket for; keep-alive otherwise), and the
 * body's framing — a declared length as declared, a chunked body chunked, no body
 * `content-length: 0` only for methods that expect one (exchange.ts requestBody, client-h1.js).
 */
function transportHeaders (headers: OutgoingHttpHeaders, method: string, inbound: IncomingHttpHeaders): void {
  const declared = inbound['content-length']
  const chunked = declared === undefined && inbound['transfer-encoding'] !== undefined
  delete headers['content-length']
  delete headers['transfer-encoding']
  headers.connection = method === 'HEAD' ? 'close' : 'keep-alive'
  if (chunked) headers['transfer-encoding'] = 'chunked'
  else if (declared !== undefined && Number(declared) > 0) headers['content-length'] = declared
  else if (EXPECTS_PAYLOAD.has(method)) headers['content-length'] = '0'
}

/** what runPipeline reads and writes of a Fastify request */
interface PipelineRequest { url: string, method: string, headers: IncomingHttpHeaders, passed: PassedRequest | undefined }

/** what runPipeline writes to a Fastify reply: the Allow of a 405, CORS headers, a preflight's 204 */
class RecordingReply {
  statusCode = 200
  readonly headers: Array<[string, string]> = []
  header (name: string, value: string): this { this.headers.push([name, value]); return this }
  code (status: number): this { this.statusCode = status; return this }
  send (): this { return this }
}

function withAllow (err: unknown, reply: RecordingReply): unknown {
  const allow = reply.headers.find(([n]) => n === 'allow')?.[1]
  return allow === undefined || !(err instanceof GatewayError) ? err : Object.assign(err, { allow })
}

// ---------------------------------------------------------------------------------------
// tokens

/**
 * The authenticate stage's verify step. A raw token goes to the Runtime's verifier (own keys:
 * signature, claims, time — everything). An identity provider's token stops there at its
 * keys, which the gateway fetches at run time: its decoded claims are used instead, marked
 * unverified. Given claims are taken as they are, their time checked.
 */
function verifyOffline (runtime: Runtime, input: ExplainRequest, raw: string, nowMs: number, out: { current: Credentials | undefined }): VerifiedToken | Promise<VerifiedToken> {
  const source = input.token !== undefined ? 'token' : input.claims !== undefined ? 'claims' : 'authorization'
  if (input.claims !== undefined && raw === CLAIMS_PLACEHOLDER) {
    out.current = { source, check: 'claims-given', note: 'claims given, signature not checked (iss, aud and required claims not checked; time checked against now)' }
    return fromClaims(runtime.config, input.claims, '', nowMs, out.current)
  }
  try {
    const verified = runtime.verifier.verify(raw, nowMs)
    out.current = { source, check: 'verified', note: 'verified with the gateway\'s keys: signature, claims, time' }
    return verified
  } catch (err) {
    if (!(err instanceof GatewayError) || err.code !== ErrorCode.tokenKeysUnavailable) {
      out.current = { source, check: 'invalid', note: 'refused by the gateway\'s verifier', ...decodedForDisplay(raw) }
      throw err
    }
    const [, payload, signature] = splitToken(raw)
    const claims = decodeSegment(payload)
    const issuer = runtime.config.issuers.find(i => i.issuer === claims.iss)
    out.current = {
      source,
      check: 'unverified',
      note: `signature not checked: the keys of issuer "${issuer?.name ?? String(claims.iss)}" are fetched at run time and explain does not fetch; decided on the decoded claims (algorithm and typ were checked)`,
    }
    return fromClaims(runtime.config, claims, signature, nowMs, out.current)
  }
}

/** a VerifiedToken from claims, the issuer chosen by `iss` as the verifier chooses it */
function fromClaims (config: GatewayConfig, claims: Record<string, unknown>, signature: string, nowMs: number, cred: Credentials): VerifiedToken {
  let iss = claims.iss
  if (iss === undefined) {
    iss = config.tokens.issuer
    cred.note += `; no iss: taken as the gateway's own (${config.tokens.issuer})`
  }
  const external = config.issuers.find(i => i.issuer === iss)
  if (iss !== config.tokens.issuer && external === undefined) {
    throw invalidToken(ErrorCode.tokenBadIssuer, 'the access token was issued by an issuer this gateway does not trust')
  }
  const { sub, jti, exp, nbf } = claims
  if (exp !== undefined && !isNumericDate(exp)) throw badClaim('exp')
  if (nbf !== undefined && !isNumericDate(nbf)) throw badClaim('nbf')
  if (exp === undefined) cred.note += '; no exp: a real token needs one'
  const skewMs = (external === undefined ? config.tokens.clockSkewSec : external.clockSkewSec) * 1000
  const scopePath = external === undefined ? ['scope'] : external.scopeClaim
  const token: VerifiedToken = {
    issuer: external === undefined ? SELF_ISSUER : external.name,
    claims,
    sub: typeof sub === 'string' ? sub : '',
    jti: typeof jti === 'string' ? jti : undefined,
    scopes: scopesAt(claims, scopePath, external === undefined),
    expMs: typeof exp === 'number' ? exp * 1000 : Number.POSITIVE_INFINITY,
    notBeforeMs: typeof nbf === 'number' ? nbf * 1000 - skewMs : 0,
    skewMs,
    key: undefined,
    identity: identityHeaders(claims, config.identity),
    signature,
  }
  Object.assign(cred, credentialsOf(cred, token))
  checkTime(token, nowMs) // the verifier's own time check
  return token
}

/** scopes as each issuer reads them: own tokens a `scope` string (RFC 9068), providers their scopeClaim */
function scopesAt (claims: Record<string, unknown>, path: readonly string[], stringOnly: boolean): ReadonlySet<string> {
  const value = claimAt(claims, path)
  if (value === undefined || value === null) return new Set()
  if (typeof value === 'string') return new Set(value.split(' ').filter(s => s !== ''))
  if (!stringOnly && Array.isArray(value) && value.every(v => typeof v === 'string')) return new Set(value as string[])
  throw badClaim(path.join('.'))
}

/** sub and exp of a token the verifier refused, to show why (decoded, not trusted) */
function decodedForDisplay (raw: string): Partial<Credentials> {
  try {
    const { sub, exp } = decodeSegment(splitToken(raw)[1])
    return { ...(typeof sub === 'string' ? { sub } : {}), ...(isNumericDate(exp) ? { expiresAt: new Date(exp * 1000).toISOString() } : {}) }
  } catch {
    return {}
  }
}

/** how the token was treated, and what it carried when it got through authentication */
function credentialsOf (treated: Credentials | undefined, token: VerifiedToken | undefined): Credentials | undefined {
  if (treated === undefined || token === undefined) return treated
  return {
    ...treated,
    issuer: token.issuer,
    sub: token.sub,
    scopes: [...token.scopes],
    ...(Number.isFinite(token.expMs) ? { expiresAt: new Date(token.expMs).toISOString() } : {}),
    identity: token.identity.map(([n, v]) => [n, v]),
  }
}

// ---------------------------------------------------------------------------------------
// what is shown

function describeRoute (ex: Explanation, runtime: Runtime, route: CompiledRoute | undefined, method: string): void {
  if (route === undefined) return
  const r = route.config
  ex.route = { name: r.name, prefix: r.prefix, upstream: r.upstreamOrigin, rewritePrefix: r.rewritePrefix }
  const compiled = route.policy.scopes.get(method)
  let needs: string
  if (r.auth === 'public') needs = 'nothing (public: no token is looked at)'
  else if (compiled === undefined) needs = r.auth === 'optional' ? 'nothing (optional: a token, if sent, must be valid)' : 'any valid token'
  else if (compiled.deny === true) needs = 'no token satisfies it (the method has no rule)'
  else needs = describeRule(compiled)
  const from = r.scopes[method] !== undefined ? method : method === 'HEAD' && r.scopes.GET !== undefined ? 'GET' : r.scopes['*'] !== undefined ? '*' : undefined
  ex.rule = {
    auth: r.auth,
    methods: r.methods === undefined ? '*' : [...r.methods],
    scope: { method, from: ruleFor(r.scopes, method) === undefined ? undefined : from, needs },
    issuers: r.auth === 'public' ? [] : [...route.policy.issuers],
    cors: route.cors && runtime.cors !== undefined,
    websocket: r.websocket,
    assertion: r.assertionAudience,
  }
}

function refusal (err: unknown): Refusal {
  if (err instanceof GatewayError) {
    const allow = (err as GatewayError & { allow?: string }).allow
    return { status: err.statusCode, reason: err.code, message: err.message, ...(err.scope === undefined ? {} : { scope: err.scope }), ...(allow === undefined ? {} : { allow }) }
  }
  return { status: 500, reason: ErrorCode.internal, message: (err as Error).message }
}

function reasonText (reason: string): string {
  if (reason === Reason.granted) return 'the token satisfies the route'
  if (reason === Reason.anonymous) return 'no token, and the route does not need one (optional)'
  if (reason === Reason.public) return 'a public route: no token is looked at'
  return reason
}

/** the route prefixes nearest to a path nobody serves, by edit distance over as many segments */
function closestRoutes (config: GatewayConfig, target: string): Array<{ name: string, prefix: string }> {
  const q = target.indexOf('?')
  const segments = (q === -1 ? target : target.slice(0, q)).toLowerCase().split('/')
  return config.routes
    .map(r => {
      const prefix = r.prefix.toLowerCase()
      const comparable = segments.slice(0, prefix.split('/').length).join('/')
      return { name: r.name, prefix: r.prefix, distance: editDistance(prefix, comparable) }
    })
    .filter(r => r.distance <= Math.max(3, Math.floor(r.prefix.length / 2)))
    .sort((a, b) => a.distance - b.distance)
    .slice(0, 3)
    .map(({ name, prefix }) => ({ name, prefix }))
}

function editDistance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[b.length] as number
}

// a JWT (JWS compact: base64url header starting `{"`, payload, signature)
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g

/**
 * Secrets never printed: credentials after their scheme, the refresh cookie's value (and any
 * cookie value that looks like a token), anything shaped like a JWT. The assertion is a
 * placeholder from the start.
 */
export function redact (config: GatewayConfig, name: string, value: string): string {
  const n = name.toLowerCase()
  if (n === 'authorization' || n === 'proxy-authorization') {
    const space = value.indexOf(' ')
    if (value.endsWith(` ${CLAIMS_PLACEHOLDER}`)) return `${value.slice(0, space)} <claims given>`
    return space === -1 ? '<redacted>' : `${value.slice(0, space)} <redacted>`
  }
  if (n === 'cookie') {
    const refresh = config.tokens.refresh.cookieName
    return value.split(';').map(pair => {
      const eq = pair.indexOf('=')
      if (eq === -1) return pair
      const cookieName = pair.slice(0, eq).trim()
      const cookieValue = pair.slice(eq + 1)
      return cookieName === refresh || new RegExp(JWT_SHAPE.source).test(cookieValue) ? `${pair.slice(0, eq)}=<redacted>` : pair
    }).join(';')
  }
  return value.replace(JWT_SHAPE, '<redacted token>')
}

function flatten (config: GatewayConfig, headers: OutgoingHttpHeaders): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    for (const v of Array.isArray(value) ? value : [value]) out.push([name, redact(config, name, String(v))])
  }
  return out
}

// ---------------------------------------------------------------------------------------
// text

export function formatExplanation (ex: Explanation): string {
  const lines: string[] = []
  const field = (label: string, text: string): void => { lines.push(`${label.padEnd(10)}${text}`) }
  const more = (text: string): void => { lines.push(`${''.padEnd(10)}${text}`) }
  field('request', `${ex.request.method} ${ex.request.target}`)
  for (const [n, v] of ex.request.headers) more(`${n}: ${v}`)
  field('edge', ex.edge.passed ? 'passed (path, Host, duplicate headers, Transfer-Encoding)' : `refused ${ex.edge.status} ${ex.edge.reason}: ${ex.edge.message}`)
  if (ex.endpoint !== undefined) field('endpoint', `${ex.endpoint.path}: the gateway's own endpoint (${ex.endpoint.name}), not a route`)
  if (ex.edge.passed && ex.endpoint === undefined) {
    if (ex.route !== undefined) {
      field('route', `${ex.route.name}: prefix ${ex.route.prefix} → ${ex.route.upstream}${ex.route.rewritePrefix}`)
    } else {
      field('route', `none: no route prefix matches ${ex.request.target.split('?')[0] ?? ''}`)
      if (ex.closest !== undefined && ex.closest.length > 0) more(`closest: ${ex.closest.map(c => `${c.prefix} (${c.name})`).join(', ')}`)
      if (/^\/auth(\/|$)/i.test(ex.request.target)) more(`the gateway's own endpoints are ${AUTH_ENDPOINTS.map(e => `/auth/${e}`).join(', ')} (POST)`)
    }
  }
  if (ex.rule !== undefined) {
    const r = ex.rule
    const from = r.scope.from === undefined ? '' : r.scope.from === r.scope.method ? ` (${r.scope.from}'s own rule)` : r.scope.from === '*' ? ' (the "*" rule)' : ` (${r.scope.from}'s rule)`
    const scope = `${r.scope.method} needs ${r.scope.needs}${from}`
    const parts = [`auth ${r.auth}`, `methods ${r.methods === '*' ? 'all' : r.methods.join(', ')}`, scope]
    if (r.auth !== 'public') parts.push(`issuers ${r.issuers.join(', ')}`)
    parts.push(`CORS ${r.cors ? 'on' : 'off'}`)
    if (r.websocket) parts.push('WebSocket upgrades')
    if (r.assertion !== undefined) parts.push(`assertion for ${r.assertion}`)
    field('rule', parts.join('; '))
  }
  if (ex.credentials !== undefined) {
    const c = ex.credentials
    const who = [
      ...(c.issuer === undefined ? [] : [`issuer ${c.issuer}`]),
      ...(c.sub === undefined ? [] : [`sub ${c.sub === '' ? '(none)' : c.sub}`]),
      ...(c.scopes === undefined ? [] : [`scopes ${c.scopes.join(' ') || '(none)'}`]),
      ...(c.expiresAt === undefined ? [] : [`expires ${c.expiresAt}`]),
    ].join(', ')
    field('token', `${c.check}${who === '' ? '' : `: ${who}`}`)
    more(c.note)
  }
  const d = ex.decision
  if (d.outcome === 'proxied') field('decision', `proxied (${d.reason}: ${d.message ?? ''})`)
  else if (d.outcome === 'answered') field('decision', `answered by the gateway ${d.status ?? ''} (${d.reason}): ${d.message ?? ''}`)
  else if (d.outcome === 'gateway') field('decision', `not proxied: ${d.message ?? ''}`)
  else {
    field('decision', `refused ${d.status ?? ''} ${d.reason}: ${d.message ?? ''}`)
    if (d.scope !== undefined) more(`scopes that would do: ${d.scope}`)
    if (d.allow !== undefined) more(`Allow: ${d.allow}`)
    if (ex.credentials?.check === 'unverified' || ex.credentials?.check === 'claims-given') more('(decided on claims whose signature was not checked)')
  }
  if (ex.upstream !== undefined) {
    field('upstream', `${ex.upstream.method} ${ex.upstream.url}`)
    for (const [n, v] of ex.upstream.headers) more(`${n}: ${v}`)
  }
  if (ex.notes.length > 0) {
    field('notes', `- ${ex.notes[0] as string}`)
    for (const n of ex.notes.slice(1)) more(`- ${n}`)
  }
  return lines.join('\n') + '\n'
}

// ---------------------------------------------------------------------------------------
// the command

export const EXPLAIN_USAGE = 'usage: portcullis explain [-c gateway.yaml] METHOD URL [--token T | --claims JSON] [-H "name: value"]… [--peer ADDR] [--json]\n'

/** exit 0: proxied (or a preflight answered); 1: refused or not proxied; 2: usage or configuration */
export async function explainCommand (args: string[], nowMs = Date.now()): Promise<number> {
  const usage = (problem: string): number => { process.stderr.write(`${problem}\n${EXPLAIN_USAGE}`); return 2 }
  let parsed
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c', default: 'gateway.yaml' },
        token: { type: 'string' },
        claims: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        peer: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
    })
  } catch (err) {
    return usage((err as Error).message)
  }
  const { values, positionals } = parsed
  if (positionals.length !== 2) return usage('explain: METHOD and URL are required')
  const method = (positionals[0] as string).toUpperCase()
  if (!(HTTP_METHODS as readonly string[]).includes(method)) return usage(`explain: METHOD must be one of ${HTTP_METHODS.join(', ')}`)
  if (values.token !== undefined && values.claims !== undefined) return usage('explain: give --token or --claims, not both')
  const headers: Array<[string, string]> = []
  for (const line of values.header ?? []) {
    const colon = line.indexOf(':')
    if (colon <= 0) return usage(`explain: -H ${JSON.stringify(line)}: expected "name: value"`)
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()])
  }
  if ((values.token !== undefined || values.claims !== undefined) && headers.some(([n]) => n.toLowerCase() === 'authorization')) {
    return usage('explain: --token/--claims set Authorization; do not give it with -H too')
  }
  let claims: Record<string, unknown> | undefined
  if (values.claims !== undefined) {
    try {
      claims = JSON.parse(values.claims) as Record<string, unknown>
    } catch {
      return usage('explain: --claims must be a JSON object')
    }
    if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) return usage('explain: --claims must be a JSON object')
  }
  const config = readConfigOrReport(values.config)
  if (config === undefined) return 2
  const { runtime, close } = offlineRuntime(config, () => nowMs)
  try {
    const ex = await explainRequest(runtime, { method: method as HttpMethod, url: positionals[1] as string, headers, token: values.token, claims, peerAddress: values.peer }, nowMs)
    // --json: absent parts as null, so every key is always there for a script
    process.stdout.write(values.json ? JSON.stringify(ex, (_key, value: unknown) => value === undefined ? null : value, 2) + '\n' : formatExplanation(ex))
    return ex.decision.outcome === 'proxied' || ex.decision.outcome === 'answered' ? 0 : 1
  } finally {
    await close()
  }
}
