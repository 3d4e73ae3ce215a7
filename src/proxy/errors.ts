import { ErrorCode, GatewayError, REQUEST_TIMEOUT_MESSAGE } from '../errors.js'

/** the route's timeout ran out before the upstream's response headers arrived */
export class UpstreamTimeoutError extends Error {
  readonly code = 'PORTCULLIS_UPSTREAM_TIMEOUT'
  constructor () { super('the upstream did not answer within the route timeout') }
}

/**
 * The upstream's response has a Transfer-Encoding other than a lone `chunked`
 * (response-headers.ts rule 12): its body cannot be relayed as sent. A 502, like undici's own
 * refusals of an upstream's framing.
 */
export class UpstreamTransferCodingError extends Error {
  readonly code = 'PORTCULLIS_UPSTREAM_TRANSFER_CODING'
  constructor () { super('the upstream sent a Transfer-Encoding other than chunked') }
}

/** the client's body went past the route's maxBodyBytes while streaming */
export class BodyTooLargeError extends Error {
  readonly code = 'PORTCULLIS_BODY_TOO_LARGE'
  constructor () { super('the request body exceeds the route limit') }
}

/** the client went away; the upstream request is aborted */
export class ClientGoneError extends Error {
  readonly code = 'PORTCULLIS_CLIENT_GONE'
  constructor () { super('the client closed the connection') }
}

/** nginx's status for a client that closed the connection before its response was complete */
export const CLIENT_CLOSED_STATUS = 499

/**
 * Reports a response that will not complete (the client left, or the upstream broke off
 * mid-body). Fastify runs the onResponse hooks — the decision line, the metrics — on the
 * response's `finish` or `error`, and a response cut short has neither; its onRequestAbort
 * fires only while the request body is unread, so never for a POST whose body was read
 * (issue 8, item 9). The response is handed its error, with the status and reason of what
 * happened: Fastify's listener is there until the response finished or failed, then nobody
 * listens and nothing is reported twice.
 */
export function reportUnfinished (request: { auth: { reason: string } }, res: { statusCode: number, writableFinished: boolean, listenerCount: (event: string) => number, emit: (event: string, err: Error) => boolean }, status: number, reason: string, cause: Error): void {
  // an answer the gateway finished itself while the exchange ran (an HTTP/2 request past
  // server.requestTimeout: 408, plugins/edge.ts) is what the client got and what is logged
  if (res.writableFinished) return
  res.statusCode = status // what the hooks read; a status line already sent stays as it was
  request.auth.reason = reason
  if (res.listenerCount('error') > 0) res.emit('error', cause)
}

// undici's and the gateway's codes are fixed identifiers; anything else would be an unbounded label
const CODE = /^[A-Z][A-Z0-9_]{0,63}$/

/** an upstream failure's code as a metric label: undici's or ours, else `other` */
export function upstreamErrorCode (err: Error): string {
  const code = (err as { code?: unknown }).code
  return typeof code === 'string' && CODE.test(code) ? code : 'other'
}

// UND_ERR_BODY_TIMEOUT: the route's idleTimeout between body chunks (the response has started by then)
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT', 'PORTCULLIS_UPSTREAM_TIMEOUT'])

/**
 * The one place upstream failures become client errors (undici's errors translated at the
 * boundary, the original kept as `cause`): timeouts → 504, a body over the limit → 413,
 * everything else → 502.
 */
export function upstreamError (err: Error): GatewayError {
  const code = (err as { code?: string }).code ?? ''
  if (TIMEOUT_CODES.has(code)) {
    return new GatewayError(ErrorCode.upstreamTimeout, 504, 'the upstream service did not answer in time', { cause: err })
  }
  if (code === 'PORTCULLIS_BODY_TOO_LARGE') return payloadTooLarge(err)
  return new GatewayError(ErrorCode.upstreamUnavailable, 502, 'the upstream service is unavailable', { cause: err })
}

export function payloadTooLarge (cause?: unknown): GatewayError {
  return new GatewayError(ErrorCode.payloadTooLarge, 413, 'the request body is larger than this route accepts', { cause })
}

/** a buffered body did not arrive whole within the route's timeout (the client's slowness, not the upstream's) */
export function requestTimedOut (): GatewayError {
  return new GatewayError(ErrorCode.requestTimeout, 408, REQUEST_TIMEOUT_MESSAGE)
}

/** the bodies being buffered already hold server.requestBufferBytes */
export function gatewayBusy (): GatewayError {
  return new GatewayError(ErrorCode.gatewayBusy, 503, 'the gateway is busy; retry shortly', { retryAfterSec: 1 })
}

export function upstreamBusy (): GatewayError {
  return new GatewayError(ErrorCode.upstreamBusy, 503, 'the upstream service is busy; retry shortly', { retryAfterSec: 1 })
}
