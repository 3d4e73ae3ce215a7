import { IncomingMessage, validateHeaderName, validateHeaderValue, type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import type { Socket } from 'node:net'
import { ErrorCode, GatewayError } from '../errors.js'
import type { PassedRequest } from '../pipeline/pipeline.js'
import { type TrustFunction } from '../pipeline/trust.js'
import type { ExplainRequest } from './explain.js'

/** The request as the gateway would receive it: Node's header assembly, Fastify's routing of the gateway's own endpoints, and what undici writes itself. */

export const GENERATED_REQUEST_ID = '<generated per request>'
/** the Content-Length of a body without one that the gateway reads whole first (routes[].requestBuffering) */
export const LENGTH_ONCE_READ = '<the body\'s length, read whole first>'
export const CLAIMS_PLACEHOLDER = 'claims-given'
// Fastify routes these before the catch-all proxy route (plugins/sessions.ts, plugins/jwks.ts);
// `start` always opens the store, so the auth endpoints are always there
export const AUTH_ENDPOINTS = ['login', 'refresh', 'logout', 'logout-all']
// proxy/websocket.ts: the client's handshake headers stay on its hop; ws writes the upstream's
export const WS_HANDSHAKE = ['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept', 'upgrade', 'connection']

/** target and Host from the URL as typed; the fragment stays with the client, as clients do */
export function splitUrl (url: string): { target: string, host: string, notes: string[] } {
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

export function requestHeaders (input: ExplainRequest, host: string): Array<[string, string]> {
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
export function incomingMessage (method: string, target: string, raw: ReadonlyArray<readonly [string, string]>): IncomingMessage {
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
export function gatewayEndpoint (method: string, target: string): { path: string, name: string } | undefined {
  const q = target.indexOf('?')
  const path = (q === -1 ? target : target.slice(0, q)).toLowerCase()
  const auth = /^\/auth\/([a-z-]+)$/.exec(path)
  if (auth !== null && AUTH_ENDPOINTS.includes(auth[1] as string)) return { path, name: `auth.${auth[1] as string}` }
  if (path === '/.well-known/jwks.json' && (method === 'GET' || method === 'HEAD')) return { path, name: 'jwks' }
  return undefined
}

/** the Node parser hands a request with Connection: upgrade and an Upgrade header to the upgrade path */
export function isUpgrade (msg: IncomingMessage): boolean {
  const connection = msg.headers.connection
  return msg.headers.upgrade !== undefined && connection !== undefined && connection.split(',').some(t => t.trim().toLowerCase() === 'upgrade')
}

/** Fastify's request.protocol / request.host under trustProxy: the last entry of a trusted peer's header */
export function forwarded (msg: IncomingMessage, trust: TrustFunction, peer: string, name: 'x-forwarded-proto' | 'x-forwarded-host'): string | undefined {
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
 * body's framing — a declared length as declared, a chunked body chunked (or, on a route that
 * reads bodies whole, sent with its length: exchange.ts #readWhole), no body
 * `content-length: 0` only for methods that expect one (exchange.ts requestBody, client-h1.js).
 */
export function transportHeaders (headers: OutgoingHttpHeaders, method: string, inbound: IncomingHttpHeaders, buffered: boolean): void {
  const declared = inbound['content-length']
  const chunked = declared === undefined && inbound['transfer-encoding'] !== undefined
  delete headers['content-length']
  delete headers['transfer-encoding']
  headers.connection = method === 'HEAD' ? 'close' : 'keep-alive'
  if (chunked) headers[buffered ? 'content-length' : 'transfer-encoding'] = buffered ? LENGTH_ONCE_READ : 'chunked'
  else if (declared !== undefined && Number(declared) > 0) headers['content-length'] = declared
  else if (EXPECTS_PAYLOAD.has(method)) headers['content-length'] = '0'
}

/** what runPipeline reads and writes of a Fastify request */
export interface PipelineRequest { url: string, method: string, headers: IncomingHttpHeaders, passed: PassedRequest | undefined, raw: { upgrade: boolean } }

/** what runPipeline writes to a Fastify reply: the Allow of a 405, CORS headers, a preflight's 204 */
export class RecordingReply {
  statusCode = 200
  readonly headers: Array<[string, string]> = []
  header (name: string, value: string): this { this.headers.push([name, value]); return this }
  code (status: number): this { this.statusCode = status; return this }
  send (): this { return this }
}

export function withAllow (err: unknown, reply: RecordingReply): unknown {
  const allow = reply.headers.find(([n]) => n === 'allow')?.[1]
  return allow === undefined || !(err instanceof GatewayError) ? err : Object.assign(err, { allow })
}
