import { BlockList, isIPv6 } from 'node:net'
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'
import type { GatewayConfig } from '../config/types.js'
import type { IdentityHeader } from '../tokens/identity.js'

/**
 * Header rewriting, the one seam where upstream-bound headers change (DESIGN: the
 * upstream's contract). Built once at boot into a HeaderRewriter; per request it copies
 * the inbound headers minus everything spoofable or hop-by-hop, then adds the identity.
 */

// RFC 9110 §7.6.1 hop-by-hop, plus legacy ones proxies still meet
const HOP_BY_HOP = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'http2-settings',
  // Node's server already answered a 100-continue; the upstream gets the body without asking
  'expect',
])
// Set by the gateway from what it saw; inbound copies survive only from a trusted proxy
const FORWARDING = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip'])

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export interface RequestFacts {
  /** address of the TCP peer */
  peerAddress: string
  /** http or https, as this gateway received it */
  protocol: string
  /** the Host the client asked for (the upstream request carries the upstream's) */
  host: string | undefined
  requestId: string
  /** identity headers of the verified token, or undefined for an anonymous request */
  identity: readonly IdentityHeader[] | undefined
  /** websocket upgrades keep their upgrade headers */
  upgrade?: boolean
}

export class HeaderRewriter {
  readonly #reservedPrefix: string
  readonly #injected: ReadonlySet<string>
  readonly #forwardAuthorization: boolean
  readonly #refreshCookie: string | undefined
  readonly #trust: (address: string) => boolean

  constructor (config: GatewayConfig) {
    const id = config.identity
    this.#reservedPrefix = id.reservedPrefix
    // the mapped names are stripped too, even outside the reserved prefix: a claim the token
    // lacks sets no header, and then a client's copy must not pass for the gateway's
    this.#injected = new Set([...id.mappings.map(m => m.header), ...(id.claimsHeader === '' ? [] : [id.claimsHeader])])
    this.#forwardAuthorization = id.forwardAuthorization
    this.#refreshCookie = id.forwardRefreshCookie ? undefined : config.tokens.refresh.cookieName
    this.#trust = trustFunction(config.server.trustProxy)
  }

  /** true for a header name a client may not send upstream: reserved prefix or injected, any case, `_` for `-` */
  #isReserved (lowerName: string): boolean {
    const name = lowerName.includes('_') ? lowerName.replaceAll('_', '-') : lowerName
    return name.startsWith(this.#reservedPrefix) || this.#injected.has(name)
  }

  /** request headers for the upstream; `inbound` names are lower case (Node's parser) */
  request (inbound: IncomingHttpHeaders, facts: RequestFacts): OutgoingHttpHeaders {
    const out: OutgoingHttpHeaders = {}
    const trusted = this.#trust(facts.peerAddress)
    const nominated = connectionNominated(inbound.connection)
    for (const name in inbound) {
      if (HOP_BY_HOP.has(name) && !(facts.upgrade === true && (name === 'upgrade' || name === 'connection'))) continue
      if (nominated !== undefined && nominated.has(name)) continue
      if (this.#isReserved(name)) continue
      if (FORWARDING.has(name) && !trusted) continue
      if (name === 'authorization' && !this.#forwardAuthorization) continue
      if (name === 'x-request-id') continue
      out[name] = inbound[name]
    }
    if (this.#refreshCookie !== undefined && typeof out.cookie === 'string') {
      const cookie = stripCookie(out.cookie, this.#refreshCookie)
      if (cookie === '') delete out.cookie
      else out.cookie = cookie
    }
    const inboundXff = trusted ? inbound['x-forwarded-for'] : undefined
    out['x-forwarded-for'] = inboundXff === undefined || inboundXff === '' ? facts.peerAddress : `${String(inboundXff)}, ${facts.peerAddress}`
    if (!trusted || inbound['x-forwarded-proto'] === undefined) out['x-forwarded-proto'] = facts.protocol
    if ((!trusted || inbound['x-forwarded-host'] === undefined) && facts.host !== undefined) out['x-forwarded-host'] = facts.host
    out['x-request-id'] = facts.requestId
    if (facts.identity !== undefined) {
      for (let i = 0; i < facts.identity.length; i++) {
        const h = facts.identity[i] as IdentityHeader
        out[h[0]] = h[1]
      }
    }
    return out
  }

  /**
   * Response headers for the client as a flat `[name, value, …]` list for `writeHead`:
   * hop-by-hop and Connection-nominated headers removed, the refresh cookie never set or
   * cleared by an upstream, `x-request-id` the gateway's, `location` mapped by the route.
   * `headers` is undici's parsed object (lower-case names); it is read, not changed.
   */
  responseList (headers: Readonly<Record<string, string | string[] | undefined>>, requestId: string, paths: { location: (value: string) => string }): Array<string | string[]> {
    const out: Array<string | string[]> = []
    const nominated = connectionNominated(headers.connection)
    for (const name in headers) {
      const value = headers[name]
      if (value === undefined || this.#dropsResponseHeader(name, nominated)) continue
      if (name === 'set-cookie') {
        const kept = this.#keepCookies(value)
        if (kept.length > 0) out.push(name, kept)
      } else if (name === 'location' && typeof value === 'string') {
        out.push(name, paths.location(value))
      } else {
        out.push(name, value)
      }
    }
    out.push('x-request-id', requestId)
    return out
  }

  /** the same rules on a header object, changed in place (the WebSocket routes' proxy hands one over) */
  response (headers: Record<string, string | string[] | number | undefined>, requestId: string): Record<string, string | string[] | number | undefined> {
    const nominated = connectionNominated(headers.connection as string | undefined)
    for (const name of Object.keys(headers)) {
      if (this.#dropsResponseHeader(name, nominated)) delete headers[name]
    }
    const cookies = headers['set-cookie']
    if (cookies !== undefined) headers['set-cookie'] = this.#keepCookies(([] as Array<string | number>).concat(cookies).map(String))
    headers['x-request-id'] = requestId
    return headers
  }

  #dropsResponseHeader (name: string, nominated: Set<string> | undefined): boolean {
    return HOP_BY_HOP.has(name) || name === 'x-request-id' || (nominated !== undefined && nominated.has(name))
  }

  /** an upstream must not plant or clear the gateway's refresh cookie */
  #keepCookies (value: string | string[]): string[] {
    const list = typeof value === 'string' ? [value] : value
    if (this.#refreshCookie === undefined) return list
    const prefix = this.#refreshCookie + '='
    return list.filter(c => !c.trimStart().startsWith(prefix))
  }

  /** the request id to use: the client's when well-formed, else a new one */
  static requestId (inbound: string | string[] | undefined, generate: () => string): string {
    return typeof inbound === 'string' && REQUEST_ID.test(inbound) ? inbound : generate()
  }
}

function connectionNominated (value: string | string[] | undefined): Set<string> | undefined {
  // the common values name no header: skip the split (every upstream response has one)
  if (value === undefined || value === '' || value === 'keep-alive' || value === 'close') return undefined
  const names = new Set<string>()
  for (const v of ([] as string[]).concat(value)) {
    for (const token of v.split(',')) {
      const name = token.trim().toLowerCase()
      if (name !== '' && name !== 'close' && name !== 'keep-alive') names.add(name)
    }
  }
  return names.size === 0 ? undefined : names
}

function stripCookie (header: string, name: string): string {
  if (!header.includes(name)) return header
  return header.split(';').filter(pair => {
    const eq = pair.indexOf('=')
    return (eq === -1 ? pair : pair.slice(0, eq)).trim() !== name
  }).join(';').trim()
}

function trustFunction (trustProxy: boolean | readonly string[]): (address: string) => boolean {
  if (trustProxy === true) return () => true
  if (trustProxy === false || trustProxy.length === 0) return () => false
  const list = new BlockList()
  for (const entry of trustProxy) {
    const [addr, bits] = entry.split('/') as [string, string | undefined]
    const type = isIPv6(addr) ? 'ipv6' : 'ipv4'
    if (bits === undefined) list.addAddress(addr, type)
    else list.addSubnet(addr, Number(bits), type)
  }
  return (address) => {
    const v4mapped = address.startsWith('::ffff:') ? address.slice(7) : address
    return list.check(v4mapped, isIPv6(v4mapped) ? 'ipv6' : 'ipv4')
  }
}
