import { isIP } from 'node:net'
import fp from 'fastify-plugin'
import { ErrorCode, GatewayError } from '../src/errors.js'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { sendError, toGatewayError } from './errors.js'
import { hostNameOf } from '../src/pipeline/edge.js'
import type { GatewayConfig } from '../src/config/types.js'

export interface AdminHostOptions {
  /** `allowedHosts`: names (no port) answered besides IP literals, `localhost` and `host` itself */
  admin: GatewayConfig['admin']
  realm: string
}

/**
 * The admin listener answers only requests addressed to it by an IP literal, `localhost` or
 * a name in `admin.allowedHosts` or `admin.host` (RFC 9110 §15.5.20: 421 Misdirected Request otherwise).
 * DNS rebinding: a page on evil.example whose name then resolves to 127.0.0.1 makes the
 * victim's browser send `Host: evil.example:9090` to the admin port, same-origin to the page —
 * before, /metrics, /readyz and /admin/workers answered it (fix-admin-dns-rebinding). A
 * browser always sends the name it resolved; probes and scrapers address a pod by IP or a
 * configured service name. One with two Host lines is refused too. An HTTP/1.0 request
 * without Host is answered: no browser sends one (so no rebinding page can), and old health
 * checkers do (HAProxy's `option httpchk` without a Host line, fix-admin-http10-probe-refused);
 * HTTP/1.1 without Host is Node's 400 before this hook (RFC 9112 §3.2).
 */
export default fp(async function adminHost (app, opts: AdminHostOptions) {
  const allowed = allowedHosts(opts.admin)
  app.addHook('onRequest', (request, reply, done) => {
    if (hostAllowed(request.raw.rawHeaders, allowed, request.raw.httpVersion === '1.0')) { done(); return }
    sendError(reply, misdirected(), opts.realm)
  })
}, { name: 'portcullis-admin-host', fastify: '5.x' })

/**
 * The admin listener's `frameworkErrors` (Fastify's option for errors raised before routing:
 * an undecodable URL, a parameter past maxParamLength): the Host check first, as for every
 * request, then the gateway's own JSON error. Without it Fastify answered in its own shape,
 * echoing the URL, whatever the Host (fix-admin-framework-errors).
 */
export function adminFrameworkErrors (admin: GatewayConfig['admin'], realm: string): (err: FastifyError, request: FastifyRequest, reply: FastifyReply) => void {
  const allowed = allowedHosts(admin)
  return (err, request, reply) => {
    if (!hostAllowed(request.raw.rawHeaders, allowed, request.raw.httpVersion === '1.0')) sendError(reply, misdirected(), realm)
    else sendError(reply, toGatewayError(err), realm)
  }
}

const allowedHosts = (admin: GatewayConfig['admin']): ReadonlySet<string> => new Set(['localhost', admin.host.toLowerCase(), ...admin.allowedHosts])

const misdirected = (): GatewayError => new GatewayError(ErrorCode.adminHostNotAllowed, 421,
  'the admin listener does not answer this host name; add it to admin.allowedHosts')

/** exactly one Host line naming an IP literal or an allowed name, with an optional port; or none at all in HTTP/1.0 */
export function hostAllowed (rawHeaders: readonly string[], allowed: ReadonlySet<string>, http10: boolean): boolean {
  let host: string | undefined
  for (let i = 0; i < rawHeaders.length; i += 2) {
    if ((rawHeaders[i] as string).toLowerCase() !== 'host') continue
    if (host !== undefined) return false
    host = rawHeaders[i + 1] as string
  }
  if (host === undefined) return http10
  // the public edge's reading of `name[:port]` / `[v6][:port]`: one grammar for both listeners
  const name = hostNameOf(host)
  return name !== undefined && (isIP(name) !== 0 || allowed.has(name.toLowerCase()))
}
