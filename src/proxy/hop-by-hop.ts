/**
 * Connection-specific headers (RFC 9110 §7.6.1), plus the legacy ones proxies still meet.
 * They describe one hop, so they never cross the gateway in either direction. `te` is
 * handled by the request rules (only `trailers` passes); `upgrade`/`connection` pass on a
 * WebSocket handshake only.
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade',
  'proxy-authorization', 'proxy-authenticate', 'http2-settings',
  // request trailers are not relayed, so the announcement of them is not either
  'trailer',
  // the gateway answers a client's 100-continue itself, after authorization
  'expect',
])

/** response side: `trailer` passes there, since response trailers are relayed */
export const HOP_BY_HOP_RESPONSE: ReadonlySet<string> = new Set([...HOP_BY_HOP].filter(h => h !== 'trailer' && h !== 'expect'))

/** the header names a `Connection` header nominates as hop-by-hop (RFC 9110 §7.6.1) */
export function connectionNominated (value: string | string[] | undefined): Set<string> | undefined {
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
