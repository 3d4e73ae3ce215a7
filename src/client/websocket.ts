/**
 * WebSockets through the gateway. Browsers cannot set Authorization on a WebSocket, and a
 * token in the URL ends up in access logs and browser history, so the token travels as a
 * subprotocol (Sec-WebSocket-Protocol): `[...appProtocols, 'portcullis',
 * 'portcullis.bearer.<token>']`. The gateway authenticates with the bearer entry, removes
 * it, and answers with the upstream's chosen protocol or `portcullis` (a server must pick
 * one of the offered protocols, so `portcullis` is always there to be picked).
 */
export const WS_PROTOCOL = 'portcullis'
export const WS_BEARER_PREFIX = 'portcullis.bearer.'
/**
 * RFC 6455 §7.4.1 policy violation: the gateway's own close when what admitted the socket
 * stops holding (the token expired or was revoked, its key was withdrawn, a reload refused
 * it). Only the gateway sends it: an upstream's 1008 reaches the client as
 * WS_UPSTREAM_POLICY_VIOLATION (proxy/websocket.ts).
 */
export const WS_POLICY_VIOLATION = 1008
/** an upstream's own 1008, relayed in the private-use range (RFC 6455 §7.4.2) with its reason */
export const WS_UPSTREAM_POLICY_VIOLATION = 4008

/** the ws(s) URL for `url` relative to the gateway, or undefined when it points elsewhere */
export function gatewaySocketUrl (url: string | URL, base: URL): URL | undefined {
  const target = new URL(url, base)
  if (target.protocol === 'http:') target.protocol = 'ws:'
  if (target.protocol === 'https:') target.protocol = 'wss:'
  const expected = base.protocol === 'https:' ? 'wss:' : 'ws:'
  return target.protocol === expected && target.host === base.host ? target : undefined
}

/** the subprotocol list to offer; the app's own may not use the reserved names */
export function socketProtocols (appProtocols: readonly string[], accessToken: string): string[] {
  for (const p of appProtocols) {
    if (p === WS_PROTOCOL || p.startsWith(WS_BEARER_PREFIX)) throw new TypeError(`portcullis client: the subprotocol ${JSON.stringify(p)} is reserved`)
  }
  return [...appProtocols, WS_PROTOCOL, WS_BEARER_PREFIX + accessToken]
}
