import t from 'tap'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream, type Recorded } from '../fixtures/upstream.js'

// Found by an adversarial review after issue 8: the README said `x-forwarded-*` survive only
// from trusted proxies, but the rewriter dropped a fixed list of ten names. A client with no
// trusted proxy in between sent `X-Forwarded-User: admin` (oauth2-proxy's identity header,
// which apps written behind it trust), `X-Forwarded-Client-Cert` (Envoy's XFCC),
// `X-Client-IP` (read before X-Forwarded-For by request-ip), `Remote-User`,
// `X-Auth-Request-User`… and every one reached the upstream. Now every `x-forwarded*` name and
// the client-address headers pass only from a trusted proxy, and the identity headers of
// other auth proxies are dropped from anyone: only the gateway speaks for the user.

const key = makeKey('EdDSA')

// what only a trusted proxy may say
const FORWARDING = [
  'X-Forwarded-Client-Cert', 'X-Forwarded-Uri', 'X-Forwarded-Path', 'X-Forwarded', 'X-Forwarded-Anything',
  'Forwarded-For', 'X-Original-Forwarded-For', 'X-Client-IP', 'True-Client-IP', 'CF-Connecting-IP',
  'Fastly-Client-IP', 'X-Cluster-Client-IP', 'X-Original-Host', 'X-Original-URI', 'X-Host',
]
// what nobody but the gateway may say
const IDENTITY = [
  'X-Forwarded-User', 'X-Forwarded-Email', 'X-Forwarded-Groups', 'X-Forwarded-Preferred-Username',
  'X-Forwarded-Access-Token', 'Remote-User', 'X-Remote-User', 'X-Auth-Request-User',
  'X-Auth-Request-Email', 'X-Auth-Request-Groups', 'X-Pomerium-Jwt-Assertion',
]

function names (rec: Recorded): string[] {
  return rec.rawHeaders.filter((_h, i) => i % 2 === 0).map(h => h.toLowerCase().replaceAll('_', '-'))
}

t.test('forwarding and other proxies\' identity headers from a client', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const routes = [
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'maybe', prefix: '/maybe', upstream: upstream.url, auth: 'optional' },
    { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'required', scopes: { '*': ['orders:read'] } },
  ]
  const direct = await startGateway(t, baseConfig(key, routes))
  const trusting = await startGateway(t, baseConfig(key, routes, { server: { trustProxy: ['127.0.0.1/32'] } }))
  const token = `Bearer ${signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' }))}`

  const spellings = (name: string): string[] => [name, name.toLowerCase(), name.replaceAll('-', '_')]
  const sent: Array<[string, string]> = [...FORWARDING, ...IDENTITY].flatMap(n => spellings(n).map(s => [s, 'admin'] as [string, string]))

  for (const [path, auth] of [['/open/x', undefined], ['/maybe/x', undefined], ['/maybe/x', token], ['/orders/x', token]] as const) {
    const label = `${path}${auth === undefined ? '' : ' with a token'}`
    const headers: Array<[string, string]> = [...sent]
    if (auth !== undefined) headers.push(['authorization', auth])

    let before = upstream.requests.length
    t.equal((await raw(direct.url, path, { headers })).status, 200, `${label}: proxied`)
    let seen = names(upstream.requests[before]!)
    for (const n of [...FORWARDING, ...IDENTITY]) t.notOk(seen.includes(n.toLowerCase()), `no trusted proxy, ${label}: ${n} dropped`)
    t.equal(upstream.requests[before]!.headers['x-forwarded-for'], '127.0.0.1', `${label}: x-forwarded-for is the gateway's`)

    before = upstream.requests.length
    t.equal((await raw(trusting.url, path, { headers })).status, 200, `trusted, ${label}: proxied`)
    seen = names(upstream.requests[before]!)
    for (const n of FORWARDING) t.ok(seen.includes(n.toLowerCase()), `from a trusted proxy, ${label}: ${n} passes`)
    for (const n of IDENTITY) t.notOk(seen.includes(n.toLowerCase()), `from a trusted proxy too, ${label}: ${n} dropped`)
  }
})
