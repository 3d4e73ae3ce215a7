import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { GatewayConfig } from '../config/types.js'
import { HeaderRewriter, type RequestFacts } from '../pipeline/headers.js'
import { BEARER_PROTOCOL_PREFIX, MARKER_PROTOCOL } from '../pipeline/extract.js'
import { HOP_BY_HOP } from '../proxy/hop-by-hop.js'
import { CLAIMS_PLACEHOLDER } from './request.js'

/**
 * What `explain` never prints (fix-explain-prints-credentials). Its output lands in
 * terminals, tickets and CI logs, and it printed verbatim what a client sent as credentials
 * in headers other than Authorization: `X-Api-Key`, every cookie but the refresh one, the
 * identity headers of other auth proxies (`X-Amzn-Oidc-Accesstoken`,
 * `X-Forwarded-Access-Token`) and a WebSocket subprotocol token. Redacted:
 *
 * 1. Authorization and Proxy-Authorization: all after the scheme
 * 2. Cookie: every value (the names stay: which cookies were sent is what explains a decision)
 * 3. Sec-WebSocket-Protocol: every entry but the marker `portcullis`; the bearer one keeps its
 *    prefix (`portcullis.bearer.<redacted>`). Other conventions put the token in an entry of
 *    its own (`bearer, <token>`), which no rule can tell from a subprotocol name
 * 4. a client's header the gateway strips as identity or credentials, whatever the proxy
 *    (the reserved prefix, mapped identity headers, other auth proxies' headers, overrides):
 *    the list is the header rewriter's own, asked by sending it the header (`#isStripped`), so
 *    it cannot drift from what the gateway drops
 * 5. a header whose name says it holds a secret (SECRET_NAME), on either side
 * 6. anything shaped like a JWT, in any header
 *
 * On the upstream side, a header of rule 4 is the gateway's own (the client's copy was
 * stripped): identity from the token, shown as it is; the assertion is a placeholder from
 * the start (explain.ts).
 */

// a JWT (JWS compact: base64url header starting `{"`, payload, signature)
const JWT_SHAPE = /eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*/g

// a name that says what it carries: API keys (X-Api-Key, Ocp-Apim-Subscription-Key,
// X-Functions-Key), tokens (X-Auth-Token, X-CSRF-Token, X-Amz-Security-Token), secrets,
// passwords, sessions, signatures (X-Hub-Signature: an HMAC a replay can reuse). Conservative
// by design: a harmless header that matches (Idempotency-Key) only loses its value in the output
const SECRET_NAME = /auth|token|secret|passw|pwd|key|session|credential|cookie|signature|bearer|jwt/

const REDACTED = '<redacted>'

// what the probe tells the rewriter about a request: from a proxy it trusts, so that only
// what it drops from anyone (rule 4) is dropped, and without a Host to forward
const PROBE_FACTS: RequestFacts = { peerAddress: '192.0.2.1', protocol: 'http', host: undefined, upstreamHost: 'upstream.invalid', requestId: 'probe', identity: undefined }
// a value no rule rewrites: a header that comes out with another value is one the gateway sets
const PROBE_VALUE = 'probe-value'

export class HeaderRedactor {
  readonly #probe: HeaderRewriter
  /** the names the rewriter writes itself (Host, X-Forwarded-For, X-Request-Id…) */
  readonly #gatewaySet: ReadonlySet<string>
  readonly #stripped = new Map<string, boolean>()

  constructor (config: GatewayConfig) {
    this.#probe = new HeaderRewriter(config, () => true)
    const own = this.#probe.requestList({}, PROBE_FACTS)
    this.#gatewaySet = new Set(own.filter((_, i) => i % 2 === 0) as string[])
  }

  /** a header as the client sends it */
  request (name: string, value: string): string {
    const n = name.toLowerCase()
    return this.#credential(n, value) ?? (this.#isStripped(n) || isSecretName(n) ? REDACTED : value.replace(JWT_SHAPE, '<redacted token>'))
  }

  /** a header as the upstream gets it: what the gateway sets itself is shown */
  upstream (name: string, value: string): string {
    const n = name.toLowerCase()
    const credential = this.#credential(n, value)
    if (credential !== undefined) return credential
    if (!this.#isStripped(n) && isSecretName(n)) return REDACTED
    return value.replace(JWT_SHAPE, '<redacted token>')
  }

  /**
   * A request target or upstream URL: the value of a query parameter whose name says it holds a
   * secret (`access_token` — RFC 6750 §2.3, refused on authenticated routes but passed on public
   * ones —, `api_key`, `sig`…) and anything shaped like a JWT. Parameter names stay.
   */
  url (value: string): string {
    const q = value.indexOf('?')
    const query = q === -1
      ? ''
      : '?' + value.slice(q + 1).split('&').map(pair => {
        const eq = pair.indexOf('=')
        if (eq === -1) return pair
        let name: string
        try { name = decodeURIComponent(pair.slice(0, eq)) } catch { name = pair.slice(0, eq) }
        return isSecretName(name.toLowerCase()) || /^sig$/i.test(name) ? `${pair.slice(0, eq)}=${REDACTED}` : pair
      }).join('&')
    return (q === -1 ? value : value.slice(0, q) + query).replace(JWT_SHAPE, '<redacted token>')
  }

  /** the upstream's headers as name/value pairs, redacted */
  flatten (headers: OutgoingHttpHeaders): Array<[string, string]> {
    const out: Array<[string, string]> = []
    for (const [name, value] of Object.entries(headers)) {
      if (value === undefined) continue
      for (const v of Array.isArray(value) ? value : [value]) out.push([name, this.upstream(name, String(v))])
    }
    return out
  }

  /** rules 1–3: the headers whose structure is kept and whose secrets are not */
  #credential (n: string, value: string): string | undefined {
    if (n === 'authorization' || n === 'proxy-authorization') {
      const space = value.indexOf(' ')
      if (value.endsWith(` ${CLAIMS_PLACEHOLDER}`)) return `${value.slice(0, space)} <claims given>`
      return space === -1 ? REDACTED : `${value.slice(0, space)} ${REDACTED}`
    }
    if (n === 'cookie') {
      return value.split(';').map(pair => {
        const eq = pair.indexOf('=')
        // a pair without `=` is a value with an empty name to browsers and cookie parsers
        if (eq === -1) return pair.trim() === '' ? pair : pair.replace(/\S.*$/, REDACTED)
        return `${pair.slice(0, eq)}=${REDACTED}`
      }).join(';')
    }
    if (n === 'sec-websocket-protocol') {
      return value.split(',').map(entry => {
        const p = entry.trim()
        if (p === '') return entry
        const shown = p === MARKER_PROTOCOL ? p : p.startsWith(BEARER_PROTOCOL_PREFIX) ? `${BEARER_PROTOCOL_PREFIX}${REDACTED}` : REDACTED
        return entry.replace(p, shown)
      }).join(',')
    }
    return undefined
  }

  /**
   * Rule 4: whether the rewriter drops this name from a trusted proxy's request. Hop-by-hop
   * headers and the ones the gateway writes itself are dropped for other reasons, and their
   * values are not credentials (Proxy-Authorization, the one that is, has rule 1).
   */
  #isStripped (n: string): boolean {
    let stripped = this.#stripped.get(n)
    if (stripped === undefined) {
      if (HOP_BY_HOP.has(n) || this.#gatewaySet.has(n)) {
        stripped = false
      } else {
        const inbound: IncomingHttpHeaders = { [n]: PROBE_VALUE }
        const out = this.#probe.requestList(inbound, PROBE_FACTS)
        stripped = !out.some((v, i) => i % 2 === 0 && v === n && out[i + 1] === PROBE_VALUE)
      }
      this.#stripped.set(n, stripped)
    }
    return stripped
  }
}

/** rule 5, on the name as CGI and frameworks read it (`X_Api_Key` is X-Api-Key) */
function isSecretName (n: string): boolean {
  return SECRET_NAME.test(n.replaceAll('_', '-'))
}
