import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { GatewayConfig } from '../config/types.js'
import type { IdentityHeader } from '../tokens/identity.js'
import { GATEWAY_HEADER_PREFIX } from '../tokens/identity.js'
import { HOP_BY_HOP, connectionNominated } from '../proxy/hop-by-hop.js'
import type { TrustFunction } from './trust.js'

/**
 * The rewrite stage: the one seam where upstream-bound request headers change (DESIGN: the
 * upstream's contract). Built once per configuration; per request it copies the inbound
 * headers minus everything spoofable or hop-by-hop, then adds what the gateway vouches for.
 * The checklist (reply-from, nginx; each rule has a test in test/e2e/):
 *
 * 1. hop-by-hop headers and every header the client's `Connection` names are removed; a
 *    `Connection` can never remove what the gateway sets (Host, identity) — those are set after
 * 2. `Host` is the upstream's own (its origin's host:port) unless the route has
 *    `preserveHost`; the client's goes in `x-forwarded-host` (fix-host-reaches-upstream)
 * 3. every header under the reserved prefix, `x-portcullis-*`, and every mapped identity
 *    header name is removed, in any case, repeated, or with `_` for `-`
 * 4. method- and path-override headers (`X-HTTP-Method-Override`, `X-HTTP-Method`,
 *    `X-Method-Override`; `X-Original-URL`, `X-Rewrite-URL`) are removed: the method and
 *    path that were authorized are the ones that run (fix-method-override; the `_method`
 *    query parameter is refused by the pipeline, edge.ts checkQuery); so are the identity
 *    headers of other auth proxies (`Remote-User`, `X-Forwarded-User`/`-Email`/`-Groups`,
 *    `X-Auth-Request-*`, Azure's `X-MS-Client-Principal*`, AWS ALB's `X-Amzn-Oidc-*`, Google
 *    IAP's, Cloudflare Access's, `X-WEBAUTH-*`, Kubernetes' `X-Remote-*`…) and
 *    `Sec-WebSocket-Protocol`, which can carry the WebSocket bearer token, from anyone
 *    (fix-forwarding-and-proxy-identity, fix-other-proxies-headers-pass,
 *    fix-subprotocol-token-on-plain-request)
 * 5. every `x-forwarded*` name (for, proto, host, client-cert, uri…), `forwarded`, the
 *    client-address headers (`x-real-ip`, `x-client-ip`, `true-client-ip`, `client-ip`,
 *    `cf-connecting-ip`…), the scheme (`x-scheme`, `front-end-https`…), client-certificate
 *    (`x-client-cert`, `x-ssl-client-*`…) and Envoy `x-envoy-*` headers survive only from a
 *    trusted proxy (server.trustProxy); the gateway appends/sets its own
 * 6. `Authorization` and the refresh cookie are not forwarded unless configured
 * 7. `x-request-id` is the gateway's (the client's when well-formed)
 * 8. `Expect` is removed (the gateway answered 100-continue itself, after authorization);
 *    `TE` passes only as `trailers`
 * 9. `traceparent`/`tracestate` are the gateway's when tracing is on
 * 10. `Content-Length` passes (undici checks it against the body it sends)
 * 11. every rule above reads `_` as `-` in a name: CGI, WSGI, PHP and Rack merge the two
 *    (`X_Forwarded_For` becomes HTTP_X_FORWARDED_FOR), so an underscore spelling of a
 *    header the gateway owns is dropped like the header itself; other names with `_` pass
 *    (nginx drops them all by default, which breaks APIs that use them)
 */

// what frameworks and libraries read as the client's address, scheme, host, path or
// certificate once they trust a proxy (Express, Spring, ASP.NET, Rack, Symfony, request-ip,
// Envoy's XFCC): only a trusted proxy may say it. Every `x-forwarded*` name is one of them
// (FORWARDING_PREFIX), whatever follows the prefix
const FORWARDING_PREFIX = 'x-forwarded'
const FORWARDING = new Set([
  'forwarded', 'forwarded-for', 'x-real-ip', 'x-client-ip', 'true-client-ip', 'cf-connecting-ip',
  'fastly-client-ip', 'x-cluster-client-ip', 'x-original-forwarded-for', 'x-original-host', 'x-original-uri', 'x-host',
  // the client's address to Rails (Client-IP), App Engine and Cloudflare's pseudo-IPv4
  'client-ip', 'x-appengine-user-ip', 'cf-pseudo-ipv4', 'cf-pseudo-ipv6',
  // the scheme to Tornado (X-Scheme), IIS/ARR, Outlook Web Access, Jetty and others
  'x-scheme', 'x-url-scheme', 'x-arr-ssl', 'front-end-https', 'x-proxied-https',
  // the client certificate a TLS-terminating proxy verified (ASP.NET Core's CertificateForwarding
  // reads X-Client-Cert; IIS ARR, nginx and HAProxy conventions)
  'x-client-cert', 'x-arr-clientcert', 'x-client-verify', 'x-client-dn', 'x-client-s-dn',
])
// the same, by prefix: nginx/HAProxy's `X-SSL-Client-*` / `SSL-Client-*` (certificate, verify
// result, subject), and Envoy's `x-envoy-*`, which an Envoy or Istio sidecar in front of an
// upstream obeys from an internal peer (`x-envoy-retry-on` would retry a POST) — tested only
// for names that start with x- or s (fix-other-proxies-headers-pass)
const FORWARDING_PREFIXED = /^(?:x-(?:ssl-client-|envoy-)|ssl-client-)/
// what frameworks run instead of the request's method (Symfony, Laravel, ASP.NET) or path
// (IIS URL Rewrite, Zend, older Symfony), and the identity other auth proxies vouch for
// (oauth2-proxy, nginx auth_request, Apache, Pomerium: apps written behind them trust these):
// only the gateway speaks for the user, so a client's copy is dropped even from a trusted proxy
const OVERRIDE_OR_IDENTITY = new Set([
  'x-http-method-override', 'x-http-method', 'x-method-override', 'x-original-url', 'x-rewrite-url',
  'remote-user', 'x-remote-user', 'x-forwarded-user', 'x-forwarded-email', 'x-forwarded-groups',
  'x-forwarded-preferred-username', 'x-forwarded-access-token', 'x-pomerium-jwt-assertion',
  // Azure App Service / Static Web Apps authentication ("Easy Auth")
  'x-ms-client-principal', 'x-ms-client-principal-name', 'x-ms-client-principal-id', 'x-ms-client-principal-idp',
  'x-ms-token-aad-access-token', 'x-ms-token-aad-id-token',
  // AWS ALB OIDC, Google IAP, Cloudflare Access
  'x-amzn-oidc-identity', 'x-amzn-oidc-data', 'x-amzn-oidc-accesstoken',
  'x-goog-authenticated-user-email', 'x-goog-authenticated-user-id', 'x-goog-iap-jwt-assertion',
  'cf-access-authenticated-user-email', 'cf-access-jwt-assertion',
  // Grafana, Gitea and other apps' auth-proxy mode; the Kubernetes front proxy (X-Remote-Extra-* below)
  'x-webauth-user', 'x-webauth-email', 'x-webauth-name', 'x-webauth-groups', 'x-webauth-role',
  'x-remote-group',
  // a browser's WebSocket credential (`portcullis.bearer.<token>`): a handshake's protocols are
  // offered to the upstream by the WebSocket proxy itself, without it (websocket.ts); copied,
  // a plain request's reached the upstream token and all (fix-subprotocol-token-on-plain-request)
  'sec-websocket-protocol',
])
const AUTH_PROXY_PREFIX = 'x-auth-request-'
// the Kubernetes front proxy's user extras (`X-Remote-Extra-<key>`)
const REMOTE_EXTRA_PREFIX = 'x-remote-extra-'

/** FORWARDING_PREFIXED, its regular expression run only for names that could match */
function forwardingPrefixed (name: string): boolean {
  const c = name.charCodeAt(0)
  return (c === 120 /* x */ || c === 115 /* s */) && FORWARDING_PREFIXED.test(name)
}
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface RequestFacts {
  /** address of the TCP peer */
  peerAddress: string
  /** http or https as the client used it (Fastify's request.protocol: trusted proxies considered) */
  protocol: string
  /** the Host the client asked for (Fastify's request.host: trusted proxies considered) */
  host: string | undefined
  /** the Host header the upstream gets */
  upstreamHost: string
  requestId: string
  /** identity headers of the verified token, or undefined for an anonymous request */
  identity: readonly IdentityHeader[] | undefined
  /** extra headers the gateway sets (assertion, traceparent) */
  extra?: readonly IdentityHeader[] | undefined
  /** websocket upgrades keep their upgrade headers */
  upgrade?: boolean
}

export class HeaderRewriter {
  readonly #reservedPrefix: string
  readonly #injected: ReadonlySet<string>
  readonly #forwardAuthorization: boolean
  readonly #refreshCookie: string | undefined
  readonly #trust: TrustFunction

  constructor (config: GatewayConfig, trust: TrustFunction) {
    const id = config.identity
    this.#reservedPrefix = id.reservedPrefix
    // the mapped names are stripped too, even outside the reserved prefix: a claim the token
    // lacks sets no header, and then a client's copy must not pass for the gateway's
    this.#injected = new Set([
      ...id.mappings.map(m => m.header),
      ...(id.claimsHeader === '' ? [] : [id.claimsHeader]),
      ...(id.assertion === undefined ? [] : [id.assertion.header]),
    ])
    this.#forwardAuthorization = id.forwardAuthorization
    this.#refreshCookie = id.forwardRefreshCookie ? undefined : config.tokens.refresh.cookieName
    this.#trust = trust
  }

  /** true for a header name a client may not send upstream: reserved prefix, injected, an override or another proxy's identity (`name` canonical) */
  #isReserved (name: string): boolean {
    return name.startsWith(this.#reservedPrefix) || name.startsWith(GATEWAY_HEADER_PREFIX) || this.#injected.has(name) ||
      OVERRIDE_OR_IDENTITY.has(name) || name.startsWith(AUTH_PROXY_PREFIX) || name.startsWith(REMOTE_EXTRA_PREFIX)
  }

  /**
   * Request headers for the upstream as undici takes them, `[name, value, …]`; `inbound`
   * names are lower case (Node's parser). A flat list rather than an object: an object given
   * per-request keys made every store to it, and undici's walk over its keys, megamorphic
   * (bench/icount.ts). Each name the gateway sets after the loop (Host, the forwarding
   * headers, the request id, identity) is left out of the copy, so it appears once.
   */
  requestList (inbound: IncomingHttpHeaders, facts: RequestFacts): Array<string | string[]> {
    const out: Array<string | string[]> = []
    const trusted = this.#trust(facts.peerAddress)
    const nominated = connectionNominated(inbound.connection)
    const forwardedHost = facts.host !== undefined && facts.host !== ''
    for (const name in inbound) {
      const value = inbound[name]
      if (value === undefined) continue
      // `X_Forwarded_For` and `X-Forwarded-For` are one variable to CGI, WSGI, PHP and Rack
      // (HTTP_X_FORWARDED_FOR): the rules judge a name with `_` read as `-` (rule 11)
      const canonical = name.includes('_') ? name.replaceAll('_', '-') : name
      if (HOP_BY_HOP.has(canonical)) {
        if (facts.upgrade === true && (name === 'upgrade' || name === 'connection')) out.push(name, value)
        else if (name === 'te' && isTrailers(value)) out.push('te', 'trailers')
        continue
      }
      if (canonical === 'host') continue // set below, after anything a client could nominate
      if (name.charCodeAt(0) === 58 /* : */) continue // HTTP/2 pseudo-headers describe the client's hop
      if (nominated !== undefined && nominated.has(name)) continue
      if (this.#isReserved(canonical)) continue
      if (canonical.startsWith(FORWARDING_PREFIX) || FORWARDING.has(canonical) || forwardingPrefixed(canonical)) {
        if (!trusted) continue
        // from a trusted proxy these pass, except the ones the gateway writes itself below
        if (name === 'x-forwarded-for' || name === 'x-forwarded-proto' || (name === 'x-forwarded-host' && forwardedHost)) continue
      }
      if (canonical === 'authorization' && !this.#forwardAuthorization) continue
      if (canonical === 'x-request-id') continue
      if (name === 'cookie' && this.#refreshCookie !== undefined && typeof value === 'string') {
        const cookie = stripCookie(value, this.#refreshCookie)
        if (cookie !== '') out.push(name, cookie)
        continue
      }
      out.push(name, value)
    }
    const inboundXff = trusted ? inbound['x-forwarded-for'] : undefined
    out.push(
      'host', facts.upstreamHost,
      'x-forwarded-for', inboundXff === undefined || inboundXff === '' ? facts.peerAddress : `${String(inboundXff)}, ${facts.peerAddress}`,
      'x-forwarded-proto', facts.protocol
    )
    if (forwardedHost) out.push('x-forwarded-host', facts.host as string)
    out.push('x-request-id', facts.requestId)
    const identity = facts.identity
    if (identity !== undefined) {
      for (let i = 0; i < identity.length; i++) {
        const h = identity[i] as IdentityHeader
        out.push(h[0], h[1])
      }
    }
    if (facts.extra !== undefined) for (const [name, value] of facts.extra) out.push(name, value)
    return out
  }

  /** the same headers as an object (the WebSocket proxy, `portcullis explain`) */
  request (inbound: IncomingHttpHeaders, facts: RequestFacts): OutgoingHttpHeaders {
    const list = this.requestList(inbound, facts)
    const out: OutgoingHttpHeaders = {}
    for (let i = 0; i < list.length; i += 2) out[list[i] as string] = list[i + 1]
    return out
  }

  /** the request id to use: the client's when well-formed, else a new one */
  static requestId (inbound: string | string[] | undefined, generate: () => string): string {
    return typeof inbound === 'string' && REQUEST_ID.test(inbound) ? inbound : generate()
  }
}

function isTrailers (te: string | string[] | undefined): boolean {
  return te !== undefined && String(te).split(',').some(t => t.trim().toLowerCase() === 'trailers')
}

function stripCookie (header: string, name: string): string {
  if (!header.includes(name)) return header
  return header.split(';').filter(pair => {
    const eq = pair.indexOf('=')
    return (eq === -1 ? pair : pair.slice(0, eq)).trim() !== name
  }).join(';').trim()
}
