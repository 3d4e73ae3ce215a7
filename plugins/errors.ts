import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import type { AuthState } from '../src/pipeline/auth-state.js'
import { ErrorCode, GATEWAY_ERROR_HEADER, GatewayError, routeNotFound } from '../src/errors.js'
import { pathRejected } from '../src/pipeline/path.js'
import { bodyUnread, closeAfterAnswer } from '../src/pipeline/edge.js'

/**
 * Every error leaves as JSON with a stable `code`, repeated in the `portcullis-error` header
 * (the mark of the gateway's own answers, which upstreams cannot forge: src/errors.ts);
 * 401/403/400-auth errors also carry WWW-Authenticate (RFC 6750 §3). Client input never yields a 500 or a stack trace:
 * only messages of errors below 500 reach the client, the rest goes to the log.
 */
export interface ErrorBody {
  statusCode: number
  code: string
  error?: string
  message: string
}

export default fp(async function errors (app, opts: { realm: string }) {
  const realm = `Bearer realm="${opts.realm}"`

  app.setErrorHandler((err: FastifyError | GatewayError, request, reply) => {
    const e = toGatewayError(err)
    // a stack only for what the gateway did not mean to answer (a bug); an answer it chose —
    // an upstream that failed, a full queue, the store away — is a warning with its cause, and
    // a 501 for what a client sent (Transfer-Encoding) is a refusal like any 4xx: a client
    // must not be able to write error lines with stacks at will
    if (e.code === ErrorCode.internal) request.log.error({ err, code: e.code, reqId: request.id }, 'request failed')
    else if (e.statusCode >= 500 && e.statusCode !== 501) request.log.warn({ code: e.code, reqId: request.id, cause: e.cause === undefined ? undefined : String(e.cause) }, 'request failed')
    else if (e.cause !== undefined) request.log.debug({ code: e.code, reqId: request.id, cause: String(e.cause) }, 'request refused')
    refuse(request, e)
    return sendError(reply, e, realm)
  })

  app.setNotFoundHandler((request, reply) => {
    const e = routeNotFound()
    refuse(request, e)
    return sendError(reply, e, realm)
  })
}, { name: 'portcullis-errors', fastify: '5.x' })

/** the decision of a refused request: its reason is the error's code (one place for every stage) */
function refuse (request: FastifyRequest, e: GatewayError): void {
  const auth = request.auth as AuthState | undefined
  if (auth === undefined) return
  auth.granted = false
  auth.reason = e.code
}

/** Fastify's own errors (bad JSON, too large, wrong media type…) keep their 4xx status; others become 500. */
export function toGatewayError (err: FastifyError | GatewayError | Error): GatewayError {
  if (err instanceof GatewayError) return err
  // the router refused a URL it cannot decode: the same verdict as our path checks
  if ((err as FastifyError).code === 'FST_ERR_BAD_URL') return pathRejected('undecodable')
  const status = (err as FastifyError).statusCode
  if (typeof status === 'number' && status >= 400 && status < 500) {
    const code = status === 413 ? ErrorCode.payloadTooLarge : status === 415 ? ErrorCode.unsupportedMediaType : ErrorCode.badRequest
    return new GatewayError(code, status, publicMessage(status), { cause: err })
  }
  return new GatewayError(ErrorCode.internal, 500, 'internal error', { cause: err })
}

function publicMessage (status: number): string {
  switch (status) {
    case 413: return 'the request body is too large'
    case 415: return 'the request body has an unsupported media type'
    case 404: return 'not found'
    default: return 'the request is malformed'
  }
}

export function sendError (reply: FastifyReply, e: GatewayError, realm: string): FastifyReply {
  const body: ErrorBody = { statusCode: e.statusCode, code: e.code, message: e.message }
  if (e.oauthError !== undefined) body.error = e.oauthError
  reply.code(e.statusCode)
  // the gateway's own answer, not an upstream's: a client acts on a 401 token_expired or a
  // 400 invalid_grant only when this is there (fix-client-trusts-upstream-answers)
  reply.header(GATEWAY_ERROR_HEADER, e.code)
  // RFC 6750 §3: the challenge on 401, on 403 insufficient_scope and on 400 invalid_request;
  // not on a 403 that is not about the token (csrf_origin, cors_rejected)
  if (e.statusCode === 401 || e.oauthError === 'insufficient_scope' || e.oauthError === 'invalid_request') {
    reply.header('www-authenticate', challenge(realm, e))
  }
  if (e.retryAfterSec !== undefined) reply.header('retry-after', String(e.retryAfterSec))
  reply.header('cache-control', 'no-store')
  // a body the client has not sent (it may wait for 100 Continue) or not finished sending
  // must not be read as the next request on this connection
  if (bodyUnread(reply.request.raw)) {
    reply.header('connection', 'close')
    closeAfterAnswer(reply.request.raw)
  }
  // the gateway's own answers carry the request id too, like proxied ones (headers.ts response())
  reply.header('x-request-id', reply.request.id)
  return reply.type('application/json; charset=utf-8').send(body)
}

function challenge (realm: string, e: GatewayError): string {
  if (e.oauthError === undefined || e.oauthError === 'invalid_grant') return realm
  let value = `${realm}, error="${e.oauthError}"`
  if (e.oauthError === 'insufficient_scope' && e.scope !== undefined) value += `, scope="${e.scope}"`
  else value += `, error_description="${descriptionChars(e.message)}"`
  return value
}

/**
 * RFC 6750 §3: error_description holds only %x20-21 / %x23-5B / %x5D-7E. Anything else — a
 * quote, a backslash, a `…` or a claim name an operator configured — would end the header
 * early or make Node refuse the header, and with it the whole error answer
 * (fix-error-description-not-ascii).
 */
function descriptionChars (message: string): string {
  return message.replaceAll('"', "'").replaceAll('…', '...').replace(/[^\x20\x21\x23-\x5b\x5d-\x7e]/g, '?')
}
