import { BlockList, isIPv6 } from 'node:net'

export type TrustFunction = (address: string | undefined, hop?: number) => boolean

/**
 * The one decision "is this peer a proxy we trust" (`server.trustProxy`), built once. Fastify
 * gets the same function, so the client address (login throttle), `request.protocol` and
 * `request.host` (CSRF same-origin check) and the forwarding headers sent upstream all agree
 * (issue 9: proxy trust was evaluated twice, two ways).
 */
export function trustFunction (trustProxy: boolean | readonly string[]): TrustFunction {
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
    if (address === undefined) return false
    const v4mapped = address.startsWith('::ffff:') ? address.slice(7) : address
    return list.check(v4mapped, isIPv6(v4mapped) ? 'ipv6' : 'ipv4')
  }
}
