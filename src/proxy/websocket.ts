import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import { WebSocket, WebSocketServer } from 'ws'
import { GATEWAY_ERROR_HEADER, type GatewayError } from '../errors.js'
import type { VerifiedToken } from '../tokens/verified-token.js'
import type { ForwardContext, UpstreamTarget } from './exchange.js'
import { CLIENT_CLOSED_STATUS, upstreamError, UpstreamTimeoutError } from './errors.js'
import type { LiveSockets } from './live-sockets.js'
import { Reason } from '../pipeline/auth-state.js'
import { pathRejected } from '../pipeline/path.js'
import { MARKER_PROTOCOL, BEARER_PROTOCOL_PREFIX } from '../pipeline/extract.js'
import { CLOSE_POLICY_VIOLATION } from './live-sockets.js'

/**
 * An upstream's own 1008 as the client receives it (RFC 6455 §7.4.2 private use; its reason
 * kept): 1008 towards a client means the gateway's close alone — the token expired or was
 * revoked, a reload refused the socket (LiveSockets) — on which a client drops its token and
 * refreshes. An upstream closing with 1008 (common for its own policy errors, or on purpose)
 * made the SDK refresh on every reconnect, a refresh loop
 * (fix-client-trusts-upstream-answers). A code, not a reason text, because it is what
 * clients switch on, and the upstream's reason then stays intact.
 */
export const CLOSE_UPSTREAM_POLICY_VIOLATION = 4008

/** the socket and first bytes of an upgrade request, stashed by the server's upgrade listener */
export const kUpgrade = Symbol('portcullis.upgrade')
export interface PendingUpgrade {
  socket: Duplex
  head: Buffer
  /** the stand-in response Fastify writes refusals to; finished by hand once upgraded */
  res: ServerResponse
  upgraded: boolean
}

// the handshake headers of the client's upgrade belong to its hop; ws makes the upstream's
const HANDSHAKE = ['sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions', 'sec-websocket-protocol', 'sec-websocket-accept', 'upgrade', 'connection']
// a sender this far ahead of its receiver is paused until the receiver has taken it
const HIGH_WATER_BYTES = 1_048_576
const kChosen = Symbol('portcullis.chosenProtocol')

/** a WebSocket route's upstream side, built once per configuration */
export interface WebSocketTarget extends UpstreamTarget {
  /** ws:// or wss:// + host:port */
  wsOrigin: string
  server: WebSocketServer
  live: LiveSockets
}

export function webSocketServer (maxPayloadBytes: number): WebSocketServer {
  return new WebSocketServer({
    noServer: true,
    maxPayload: maxPayloadBytes,
    perMessageDeflate: false, // compression across a proxy: CPU for the gateway, and a CRIME-style oracle
    // the client learns the upstream's choice; `portcullis` when the upstream chose none but
    // the client offered it (browsers fail a handshake that answers none of the offered protocols)
    handleProtocols: (_offered, req) => (req as IncomingMessage & { [kChosen]?: string | false })[kChosen] ?? false,
  })
}

/**
 * The proxy stage for a WebSocket upgrade that passed the pipeline (its handshake already
 * checked whole at the edge, checkUpgrade): connect to the upstream first (with the
 * rewritten headers: identity in, client copies and the bearer protocol out), then complete
 * the client's handshake with the protocol the upstream chose, then
 * relay messages both ways with backpressure. The socket is closed with 1008 when what
 * admitted it stops holding: its token expires or is revoked, a reload refuses it (LiveSockets).
 */
export function forwardWebSocket (target: WebSocketTarget, request: FastifyRequest, reply: FastifyReply, ctx: ForwardContext, token: VerifiedToken | undefined): void {
  const raw = request.raw as IncomingMessage & { [kUpgrade]?: PendingUpgrade, [kChosen]?: string | false }
  const pending = raw[kUpgrade] as PendingUpgrade
  const offered = parseProtocols(request.headers['sec-websocket-protocol'])
  const appProtocols = offered.filter(p => p !== MARKER_PROTOCOL && !p.startsWith(BEARER_PROTOCOL_PREFIX))
  const headers = target.rewriter.request(request.headers, { ...ctx.facts, upgrade: true })
  for (const h of HANDSHAKE) delete headers[h]
  const remainingMs = Math.max(1, target.timeoutMs - (performance.now() - request.acceptedAt))
  let upstream: WebSocket
  try {
    upstream = new WebSocket(targetAsSent(target.wsOrigin, target.path.map(request.url)), appProtocols, {
      headers: headers as Record<string, string>,
      perMessageDeflate: false,
      handshakeTimeout: remainingMs,
      maxPayload: target.maxBodyBytes,
      followRedirects: false,
    })
  } catch {
    // `ws` refuses a URL the edge let through (checkPath refuses what is known: a fragment):
    // the client's target, so a 400, never a 500; its message names the upstream, so not
    // repeated (fix-query-fragment-and-raw-bytes)
    throw pathRejected('not a valid WebSocket URL')
  }
  reply.hijack()
  let settled = false
  // the client's socket was destroyed before its handshake completed (an error, or `ws`
  // refusing the handshake, which it destroys without a callback — checkUpgrade at the edge
  // refuses first whatever `ws` would): the upstream connection goes with it, never left
  // open outside LiveSockets (fix-websocket-handshake-checked-first). A client that only
  // half-closes is not seen until the route timeout ends the upstream handshake: the socket
  // is not read before the upgrade completes
  pending.socket.once('close', () => {
    if (settled) return
    settled = true
    upstream.terminate()
    request.auth.reason = Reason.clientClosed
    pending.res.statusCode = CLIENT_CLOSED_STATUS
    pending.res.emit('finish')
  })
  const refuse = (error: GatewayError): void => {
    if (settled) return
    settled = true
    upstream.terminate()
    reply.code(error.statusCode)
    writeRefusal(pending, error, request.id)
  }
  upstream.once('unexpected-response', (_req, res) => {
    // the upstream refused the upgrade itself: the client gets its status, nothing else
    if (settled) return
    settled = true
    res.resume()
    upstream.terminate()
    reply.code(res.statusCode ?? 502)
    writeStatus(pending, res.statusCode ?? 502, request.id)
  })
  upstream.once('error', (err) => {
    refuse(upstreamError(/timeout/i.test(err.message) ? new UpstreamTimeoutError() : err))
  })
  upstream.once('open', () => {
    if (settled) return
    if (pending.socket.destroyed) return // the close listener above has ended both sides
    raw[kChosen] = upstream.protocol !== '' ? upstream.protocol : offered.includes(MARKER_PROTOCOL) ? MARKER_PROTOCOL : false
    target.server.handleUpgrade(raw, pending.socket, pending.head, (client) => {
      settled = true
      pending.upgraded = true
      // the decision line and metrics follow the response's `finish`; a 101 has no other end
      pending.res.statusCode = 101
      pending.res.emit('finish')
      link(client, upstream, target.writeTimeoutMs, target.live.add(request.url, token, (code, reason) => { client.close(code, reason); upstream.close(1000, 'client session ended') }, request.runtime.generation))
    })
  })
}

/**
 * The upstream URL of a WebSocket whose handshake carries `target` (the rewritten request
 * target) as the client spelled it. `ws` takes the handshake's target from a URL's
 * `pathname + search`, and a WHATWG URL re-encodes `"`, `<`, `>`, `` ` ``, `{`, `}` in a path
 * and `'`, `"`, `<`, `>` in a ws: query: the upstream got `/ws/%7Bid%7D` for `/live/{id}`,
 * another spelling than the one authorized, where a plain route forwards the bytes as sent
 * (fix-websocket-target-as-sent). The URL keeps its host and port for the connection; its
 * own `pathname` and `search` answer the target as given. checkPath has refused everything a
 * request line cannot carry (raw bytes outside visible ASCII, a `#`), so it is sent as is.
 * Throws as `new URL` does for what `ws` could not connect to.
 */
function targetAsSent (origin: string, target: string): URL {
  const url = new URL(origin + target)
  return Object.defineProperties(url, { pathname: { value: target }, search: { value: '' } })
}

function link (client: WebSocket, upstream: WebSocket, writeTimeoutMs: number, forget: () => void): void {
  relay(client, upstream, undefined)
  relay(upstream, client, writeTimeoutMs)
  let closed = false
  const closeBoth = (fromUpstream: boolean, code: number, reason: Buffer): void => {
    if (closed) return
    closed = true
    forget()
    const c = fromUpstream && code === CLOSE_POLICY_VIOLATION ? CLOSE_UPSTREAM_POLICY_VIOLATION : sendableCode(code)
    const r = reason.toString().slice(0, 120)
    for (const ws of [client, upstream]) {
      if (ws.readyState === WebSocket.OPEN) ws.close(c, r)
      else if (ws.readyState === WebSocket.CONNECTING) ws.terminate()
    }
  }
  client.on('close', (code: number, reason: Buffer) => { closeBoth(false, code, reason) })
  upstream.on('close', (code: number, reason: Buffer) => { closeBoth(true, code, reason) })
  client.on('error', () => { client.terminate(); upstream.terminate() })
  upstream.on('error', () => { upstream.terminate(); client.terminate() })
}

/**
 * Messages from `from` to `to`, with backpressure: `from` is paused while `to` is more than
 * HIGH_WATER_BYTES behind. With `stalledMs` (server.writeTimeout, towards the client), a
 * receiver that takes nothing of what it is behind on for that long is dropped, and its peer
 * with it: a client that never reads held its upstream connection open for ever
 * (fix-websocket-client-never-reads). A receiver that is merely idle is never timed.
 */
function relay (from: WebSocket, to: WebSocket, stalledMs: number | undefined): void {
  let paused = false
  let stalled: NodeJS.Timeout | undefined
  from.on('message', (data, isBinary) => {
    if (to.readyState !== WebSocket.OPEN) return
    to.send(data, { binary: isBinary }, () => {
      if (!paused) return
      stalled?.refresh() // it took something: the clock starts again
      if (to.bufferedAmount < HIGH_WATER_BYTES / 2) {
        paused = false
        clearTimeout(stalled)
        stalled = undefined
        from.resume()
      }
    })
    if (!paused && to.bufferedAmount > HIGH_WATER_BYTES) {
      paused = true
      from.pause()
      if (stalledMs !== undefined) stalled = setTimeout(() => { to.terminate(); from.terminate() }, stalledMs)
    }
  })
  to.once('close', () => { clearTimeout(stalled) })
}

/** close codes that may be sent on the wire (RFC 6455 §7.4.1: 1005, 1006, 1015 are reserved) */
function sendableCode (code: number): number {
  return code === 1000 || (code >= 1001 && code <= 1014 && code !== 1004 && code !== 1005 && code !== 1006) || (code >= 3000 && code <= 4999) ? code : 1000
}

export function parseProtocols (header: string | string[] | undefined): string[] {
  if (header === undefined) return []
  return ([] as string[]).concat(header).flatMap(v => v.split(',')).map(p => p.trim()).filter(p => p !== '')
}

/** the gateway's own refusal: its code in the body and in the mark of the gateway's answers (plugins/errors.ts) */
function writeRefusal (pending: PendingUpgrade, error: GatewayError, requestId: string): void {
  const body = JSON.stringify({ statusCode: error.statusCode, code: error.code, message: error.message })
  writeRaw(pending, error.statusCode, requestId, body, `${GATEWAY_ERROR_HEADER}: ${error.code}\r\n`)
}

/** the upstream refused the upgrade: its status, not marked as the gateway's */
function writeStatus (pending: PendingUpgrade, status: number, requestId: string): void {
  writeRaw(pending, status, requestId, '', '')
}

function writeRaw (pending: PendingUpgrade, status: number, requestId: string, body: string, gatewayMark: string): void {
  pending.res.statusCode = status
  const socket = pending.socket
  if (socket.writable) {
    socket.end(`HTTP/1.1 ${status} ${status === 502 ? 'Bad Gateway' : status === 504 ? 'Gateway Timeout' : 'Upgrade Refused'}\r\n` +
      'connection: close\r\ncache-control: no-store\r\n' + `x-request-id: ${requestId}\r\n` + gatewayMark +
      (body === '' ? 'content-length: 0\r\n\r\n' : `content-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`))
  } else {
    socket.destroy()
  }
  pending.res.emit('finish')
}
