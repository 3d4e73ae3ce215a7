import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'

// The gateway matched `/api/admin.` under `/api` (its last segment is `admin.`, not `admin`)
// and forwarded it byte for byte — but an upstream on Windows/IIS or ASP.NET trims a
// segment's trailing dots and spaces, and compares paths case-insensitively with Unicode
// case mapping or "best fit"/NFKC folding: there `/api/admin.`, `/api/admin%20`,
// `/api/%C5%BFecrets` (ſ → S) and `/api/%EF%BD%81dmin` (fullwidth ａ) are the admin and
// secrets endpoints, reached under the public route's rule. The upstream below reads paths
// that way; the gateway now refuses those paths (400 path_rejected) before any route.

const key = makeKey('EdDSA')

/** how a lenient upstream (IIS, ASP.NET routing) reads a path: decoded, NFKC, trailing dots and spaces trimmed, upper-cased */
function lenient (path: string): string {
  return decodeURIComponent(path).normalize('NFKC').split('/').map(s => s.replace(/[. \u00a0]+$/, '')).join('/').toUpperCase()
}

t.test('paths a lenient upstream folds into a protected route never reach it', async (t) => {
  const upstream = await startUpstream((req, res) => {
    const path = lenient(req.url.split('?')[0] ?? '')
    const area = path.startsWith('/API/ADMIN') ? 'admin' : path.startsWith('/API/SECRETS') ? 'secrets' : path.startsWith('/API/INTERNAL') ? 'internal' : path.startsWith('/API/KEYS') ? 'keys' : 'public'
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ area }))
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'public', prefix: '/api', upstream: upstream.url, auth: 'public' },
    { name: 'admin', prefix: '/api/admin', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
    { name: 'secrets', prefix: '/api/secrets', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
    { name: 'internal', prefix: '/api/internal', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
    { name: 'keys', prefix: '/api/keys', upstream: upstream.url, auth: 'required', scopes: { '*': ['admin'] } },
  ]))
  const hostile = [
    '/api/admin.', '/api/admin./users', '/api/admin...', '/api/admin%20', '/api/admin%20/users', '/api/admin%C2%A0',
    '/api/%C5%BFecrets', '/api/%c4%b1nternal', '/api/%E2%84%AAeys', '/api/%EF%BD%81dmin', '/api%EF%BC%8Fadmin',
  ]
  for (const path of hostile) {
    t.equal(lenient(path).startsWith('/API/PUBLIC'), false, `${path}: the lenient upstream reads it as a protected path`)
    const res = await raw(gw.url, path)
    t.equal(res.status, 400, `${path}: refused`)
    t.equal(res.json().code, 'path_rejected')
  }
  t.equal(upstream.requests.length, 0, 'the upstream saw none of them')

  // what stays: ordinary paths, and the protected routes under their own rules
  const user = `Bearer ${signWith(key, goodClaims({ scope: 'orders:read' }))}`
  const admin = `Bearer ${signWith(key, goodClaims({ scope: 'admin' }))}`
  t.equal((await raw(gw.url, '/api/admin', { headers: { authorization: user } })).status, 403, 'the admin route wants its scope')
  t.same((await raw(gw.url, '/api/admin/users', { headers: { authorization: admin } })).json(), { area: 'admin' })
  for (const path of ['/api/v1.2/items', '/api/a%20b/c', '/api/caf%C3%A9', '/api/%E2%82%AC', '/api/items?q=ends.']) {
    const res = await raw(gw.url, path)
    t.equal(res.status, 200, `${path}: an ordinary path passes`)
    t.same(res.json(), { area: 'public' })
  }
})
