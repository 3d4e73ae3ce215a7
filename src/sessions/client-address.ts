/**
 * The key under which a client address is throttled. The address itself comes from the
 * HTTP layer (Fastify's `request.ip`, which follows the one `server.trustProxy` setting);
 * this module only aggregates it:
 * - IPv4 as is; IPv4-mapped IPv6 (`::ffff:192.0.2.1`) as the IPv4 it maps;
 * - IPv6 per /64: one subscriber usually gets a whole /64 (RFC 6177 recommends /56 or
 *   /48 to sites), so counting single addresses would hand an attacker 2^64 fresh keys;
 * - anything else (a forwarded-for value that is not an address) as a fixed-size hash,
 *   so a hostile header cannot make a key of arbitrary size.
 * Keys are at most 45 characters.
 */
import { createHash } from 'node:crypto'
import { isIP } from 'node:net'

/** the 8 groups of an IPv6 address as numbers, or undefined */
function ipv6Groups (address: string): number[] | undefined {
  let text = address
  let tail: number[] = []
  // an embedded IPv4 tail (::ffff:1.2.3.4, 64:ff9b::1.2.3.4) becomes two groups
  const lastColon = text.lastIndexOf(':')
  const v4 = text.slice(lastColon + 1)
  if (v4.includes('.')) {
    if (isIP(v4) !== 4) return undefined
    const o = v4.split('.').map(Number)
    tail = [(o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!]
    text = text.slice(0, lastColon + 1) + '0' // placeholder, replaced below
  }
  const halves = text.split('::')
  if (halves.length > 2) return undefined
  const parse = (part: string): number[] => part === '' ? [] : part.split(':').map((h) => Number.parseInt(h, 16))
  let groups: number[]
  if (halves.length === 2) {
    const head = parse(halves[0]!)
    const rest = parse(halves[1]!)
    const missing = 8 - head.length - rest.length - (tail.length > 0 ? 1 : 0)
    if (missing < 0) return undefined
    groups = [...head, ...Array<number>(missing).fill(0), ...rest]
  } else {
    groups = parse(text)
  }
  if (tail.length > 0) groups = [...groups.slice(0, -1), ...tail]
  if (groups.length !== 8 || groups.some((g) => !Number.isInteger(g) || g < 0 || g > 0xffff)) return undefined
  return groups
}

export function throttleAddressKey (address: string | undefined): string | undefined {
  if (address === undefined || address === '') return undefined
  const bare = address.includes('%') ? address.slice(0, address.indexOf('%')) : address // zone id (fe80::1%eth0)
  const family = isIP(bare)
  if (family === 4) return bare
  if (family === 6) {
    const g = ipv6Groups(bare)
    if (g !== undefined) {
      if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) {
        return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`
      }
      return `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64`
    }
  }
  return 'h:' + createHash('sha256').update(address, 'utf8').digest('base64url')
}
