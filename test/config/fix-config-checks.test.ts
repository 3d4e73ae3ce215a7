import t from 'tap'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { makeKey } from '../fixtures/keys.js'
import { problemsOf } from '../fixtures/config-problems.js'

// Regression tests for the configuration holes of issue 9 (items 6 and 9) and the checks of
// the settings added this round. One row per case: the edit, and the problem paths it must
// produce ([] = the file loads). Paths and lines, never message prose (a keyword at most).

const ed = makeKey('EdDSA')
const hs = makeKey('HS256')
const es = makeKey('ES256')

function minimal (): Record<string, any> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: ed.privatePem }] },
    routes: [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:4001', auth: 'required' }],
  }
}

interface Row { name: string, edit: (c: Record<string, any>) => void, paths: string[], match?: RegExp }
const route = (r: Record<string, unknown>): Record<string, unknown> => ({ name: `r${Math.random().toString(36).slice(2, 8)}`, upstream: 'http://127.0.0.1:4001', auth: 'required', ...r })
const routes = (...list: Array<Record<string, unknown>>) => (c: Record<string, any>): void => { c.routes = list.map((r, i) => ({ ...route(r), name: `r${i}` })) }

const rows: Row[] = [
  // issue 9 item 6: scopes fail closed for methods without a rule
  { name: 'fix-scopes-fail-open: only GET has a rule', edit: routes({ prefix: '/o', scopes: { GET: ['orders:read'] } }), paths: ['/routes/0/scopes'], match: /POST, PUT, PATCH, DELETE, OPTIONS/ },
  { name: 'scopes: GET and "*"', edit: routes({ prefix: '/o', scopes: { GET: ['a'], '*': ['b'] } }), paths: [] },
  { name: 'scopes: an explicit "*": [] means any valid token', edit: routes({ prefix: '/o', scopes: { GET: ['a'], '*': [] } }), paths: [] },
  { name: 'scopes: every method of `methods` covered (HEAD by GET)', edit: routes({ prefix: '/o', methods: ['GET', 'HEAD', 'POST'], scopes: { GET: ['a'], POST: ['b'] } }), paths: [] },
  { name: 'scopes: a method of `methods` uncovered', edit: routes({ prefix: '/o', methods: ['GET', 'DELETE'], scopes: { GET: ['a'] } }), paths: ['/routes/0/scopes'], match: /DELETE/ },
  { name: 'no scopes at all on a required route: any valid token', edit: routes({ prefix: '/o' }), paths: [] },
  // issue 9 item 9
  { name: 'fix-max-token-lifetime-unbounded: 1d', edit: c => { c.tokens.maxTokenLifetime = '1d' }, paths: ['/tokens/maxTokenLifetime'] },
  { name: 'maxTokenLifetime below accessTokenTtl', edit: c => { c.tokens.maxTokenLifetime = '1m' }, paths: ['/tokens/maxTokenLifetime'] },
  { name: 'maxTokenLifetime 1h', edit: c => { c.tokens.maxTokenLifetime = '1h' }, paths: [] },
  { name: 'fix-claims-header-forbidden: claimsHeader authorization', edit: c => { c.identity = { claimsHeader: 'Authorization' } }, paths: ['/identity/claimsHeader'] },
  { name: 'claimsHeader x-forwarded-for', edit: c => { c.identity = { claimsHeader: 'x-forwarded-for' } }, paths: ['/identity/claimsHeader'] },
  { name: 'claimsHeader equal to a mapped header', edit: c => { c.identity = { claimsHeader: 'x-user-id' } }, paths: ['/identity/claimsHeader'] },
  { name: 'fix-admin-token-short: 8 characters', edit: c => { c.admin = { token: 'abcdefgh' } }, paths: ['/admin/token'] },
  { name: 'admin token of 32 characters', edit: c => { c.admin = { token: 'a'.repeat(32) } }, paths: [] },
  { name: 'fix-prefix-router-syntax: a prefix with :', edit: routes({ prefix: '/api/:id' }), paths: ['/routes/0/prefix'] },
  { name: 'a prefix with *', edit: routes({ prefix: '/api/*' }), paths: ['/routes/0/prefix'] },
  { name: 'fix-prefix-gateway-paths: /auth', edit: routes({ prefix: '/auth' }), paths: ['/routes/0/prefix'] },
  { name: 'a prefix under /auth', edit: routes({ prefix: '/auth/login' }), paths: ['/routes/0/prefix'] },
  { name: 'a prefix /AUTH in another case', edit: routes({ prefix: '/AUTH' }), paths: ['/routes/0/prefix'] },
  { name: '/.well-known/jwks.json', edit: routes({ prefix: '/.well-known/jwks.json' }), paths: ['/routes/0/prefix'] },
  { name: '/.well-known', edit: routes({ prefix: '/.well-known' }), paths: ['/routes/0/prefix'] },
  { name: 'another /.well-known path is fine', edit: routes({ prefix: '/.well-known/security.txt', auth: 'public' }), paths: [] },
  { name: 'a root catch-all below the gateway endpoints is fine', edit: routes({ prefix: '/', auth: 'public' }), paths: [] },
  { name: 'fix-shadow-weaker-scopes: a nested required route with weaker scopes', edit: routes({ prefix: '/admin', scopes: { '*': ['admin'] } }, { prefix: '/admin/users', scopes: { '*': ['users:read'] } }), paths: ['/routes/1/prefix'], match: /weaker/ },
  { name: 'a nested required route with stronger scopes', edit: routes({ prefix: '/admin', scopes: { '*': ['admin'] } }, { prefix: '/admin/users', scopes: { '*': ['admin', 'users:read'] } }), paths: [] },
  { name: 'a nested route under an any-token route', edit: routes({ prefix: '/api' }, { prefix: '/api/x', scopes: { '*': ['x'] } }), paths: [] },
  { name: 'nested route accepting another issuer', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'https://idp.test/keys', audiences: ['api'] }]; routes({ prefix: '/a', issuers: ['self'] }, { prefix: '/a/b' })(c) }, paths: ['/routes/1/prefix'], match: /corp/ },
  { name: 'nested weaker route acknowledged with allowShadow', edit: routes({ prefix: '/admin', scopes: { '*': ['admin'] } }, { prefix: '/admin/users', scopes: { '*': ['x'] }, allowShadow: true }), paths: [] },
  { name: 'a public route in a protected prefix', edit: routes({ prefix: '/a' }, { prefix: '/a/open', auth: 'public' }), paths: ['/routes/1/prefix'] },
  // listeners
  { name: 'http2 without tls', edit: c => { c.server = { http2: true } }, paths: ['/server/http2'] },
  { name: 'tls files that do not exist', edit: c => { c.server = { tls: { certFile: './nope.pem', keyFile: './nope.key' } } }, paths: ['/server/tls/certFile', '/server/tls/keyFile'], match: /ENOENT/ },
  // two keys in one PEM: the first was taken silently (stop 43 review); EC PARAMETERS before an EC key is one key
  { name: 'a private key entry holding two keys', edit: c => { c.tokens.keys[0].privateKey = ed.privatePem + makeKey('EdDSA').privatePem }, paths: ['/tokens/keys/0/privateKey'], match: /2 keys/ },
  { name: 'an EC key after its EC PARAMETERS block', edit: c => { c.tokens.algorithm = 'ES256'; c.tokens.keys[0].privateKey = '-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n' + es.privatePem }, paths: [] },
  // a TLS section with a bad file is its own problem, not also "HTTP/2 needs server.tls" (stop 43 review)
  { name: 'http2 with tls files that do not exist', edit: c => { c.server = { http2: true, tls: { certFile: './nope.pem', keyFile: './nope.key' } } }, paths: ['/server/tls/certFile', '/server/tls/keyFile'], match: /ENOENT/ },
  { name: 'workers 2 on the embedded store', edit: c => { c.server = { workers: 2 } }, paths: ['/server/workers'], match: /PostgreSQL/ },
  { name: 'workers 2 on PostgreSQL', edit: c => { c.server = { workers: 2 }; c.database = { url: 'postgres://db/x' } }, paths: [] },
  { name: 'workers auto on the embedded store: one worker', edit: c => { c.server = { workers: 'auto' } }, paths: [] },
  { name: 'writeTimeout below 1s', edit: c => { c.server = { writeTimeout: '100ms' } }, paths: ['/server/writeTimeout'] },
  // CORS
  { name: 'cors "*" with credentials', edit: c => { c.cors = { origins: ['*'] } }, paths: ['/cors/origins'], match: /credentials/ },
  { name: 'cors "*" without credentials', edit: c => { c.cors = { origins: ['*'], credentials: false } }, paths: [] },
  { name: 'cors origin with a path', edit: c => { c.cors = { origins: ['https://app.test/x'] } }, paths: ['/cors/origins/0'] },
  { name: 'routes[].cors false without a cors section', edit: routes({ prefix: '/a', cors: false }), paths: ['/routes/0/cors'] },
  // identity providers
  { name: 'issuer named self', edit: c => { c.issuers = [{ name: 'self', issuer: 'https://idp.test', jwksUri: 'https://idp.test/k', audiences: ['a'] }] }, paths: ['/issuers/0/name'] },
  { name: 'issuer without discovery or jwksUri', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', audiences: ['a'] }] }, paths: ['/issuers/0'] },
  { name: 'issuer with discovery and jwksUri', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', discovery: true, jwksUri: 'https://idp.test/k', audiences: ['a'] }] }, paths: ['/issuers/0'] },
  { name: 'jwksUri over plain http off loopback', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'http://idp.test/k', audiences: ['a'] }] }, paths: ['/issuers/0/jwksUri'] },
  { name: 'jwksUri over http on loopback (tests, sidecars)', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'http://127.0.0.1:9/k', audiences: ['a'] }] }, paths: [] },
  { name: 'jwksUri over http on [::1]', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'http://[::1]:9/k', audiences: ['a'] }] }, paths: [] },
  // fix-idp-loopback-mismatch: the check said "loopback" for DNS names the key set then refused at start
  { name: 'jwksUri over http to a DNS name that starts with 127.', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'http://127.attacker.example/k', audiences: ['a'] }] }, paths: ['/issuers/0/jwksUri'] },
  { name: 'discovery over http to 127.0.0.1.nip.io', edit: c => { c.issuers = [{ name: 'corp', issuer: 'http://127.0.0.1.nip.io/realm', discovery: true, audiences: ['a'] }] }, paths: ['/issuers/0/issuer'] },
  { name: 'discovery issuer with a query', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test/realm?x=1', discovery: true, audiences: ['a'] }] }, paths: ['/issuers/0/issuer'] },
  { name: 'discovery issuer with a fragment', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test/realm#x', discovery: true, audiences: ['a'] }] }, paths: ['/issuers/0/issuer'] },
  { name: 'issuer HS256 (never from a JWKS)', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://idp.test', jwksUri: 'https://idp.test/k', audiences: ['a'], algorithms: ['HS256'] }] }, paths: ['/issuers/0/algorithms/0'] },
  { name: 'issuer with the tokens issuer', edit: c => { c.issuers = [{ name: 'corp', issuer: 'https://auth.test', jwksUri: 'https://idp.test/k', audiences: ['a'] }] }, paths: ['/issuers/0/issuer'] },
  { name: 'route naming an unknown issuer', edit: routes({ prefix: '/a', issuers: ['nobody'] }), paths: ['/routes/0/issuers/0'] },
  // assertions
  { name: 'route assertion without identity.assertion', edit: routes({ prefix: '/a', assertion: { audience: 'https://a.internal' } }), paths: ['/routes/0/assertion'] },
  { name: 'assertion on an HS256 gateway', edit: c => { c.tokens.algorithm = 'HS256'; c.tokens.keys = [{ kid: 'k1', secret: hs.privatePem }]; c.identity = { assertion: { header: 'x-portcullis-assertion' } } }, paths: ['/identity/assertion'], match: /HS256/ },
  { name: 'assertion header that steers HTTP', edit: c => { c.identity = { assertion: { header: 'authorization' } } }, paths: ['/identity/assertion/header'] },
  // identity mapping by path
  { name: 'mapping with both claim and path', edit: c => { c.identity = { headers: [{ claim: 'a', path: ['b'], header: 'x-user-a' }] } }, paths: ['/identity/headers/0'] },
  { name: 'mapping by path', edit: c => { c.identity = { headers: [{ path: ['realm_access', 'roles'], header: 'x-user-roles' }, { claim: 'https://example.com/tenant', header: 'x-user-tenant' }] } }, paths: [] },
  // revocation and login
  { name: 'maxStaleness below two heartbeats', edit: c => { c.revocation = { maxStaleness: '1s', heartbeatInterval: '5s' } }, paths: ['/revocation/maxStaleness'] },
  { name: 'maxLockout below lockout', edit: c => { c.login = { throttle: { lockout: '10m', maxLockout: '1m' } } }, paths: ['/login/throttle/maxLockout'] },
  // the embedded store's directory: a path, or memory:// (fix-data-dir-memory-url)
  { name: 'dataDir memory://', edit: c => { c.database = { dataDir: 'memory://' } }, paths: [] },
  { name: 'dataDir with another scheme', edit: c => { c.database = { dataDir: 'idb://sessions' } }, paths: ['/database/dataDir'], match: /memory:\/\// },
  { name: 'dataDir file URL', edit: c => { c.database = { dataDir: 'file:///var/lib/portcullis' } }, paths: ['/database/dataDir'] },
  // bodies read whole (fix-slow-body-holds-upstream): a route's largest body must fit the process's budget
  { name: 'maxBodyBytes above requestBufferBytes', edit: c => { c.routes[0].maxBodyBytes = 200_000_000 }, paths: ['/routes/0/maxBodyBytes'], match: /requestBuffering: false/ },
  { name: 'maxBodyBytes above requestBufferBytes, streamed', edit: c => { c.routes[0].maxBodyBytes = 200_000_000; c.routes[0].requestBuffering = false }, paths: [] },
  { name: 'maxBodyBytes within a raised requestBufferBytes', edit: c => { c.routes[0].maxBodyBytes = 200_000_000; c.server = { requestBufferBytes: 200_000_000 } }, paths: [] },
  { name: 'maxBodyBytes above a lowered requestBufferBytes', edit: c => { c.server = { requestBufferBytes: 1_048_576 } }, paths: ['/routes/0/maxBodyBytes'] },
  { name: 'a WebSocket route\'s message cap is not a buffered body', edit: c => { c.routes[0].websocket = true; c.routes[0].maxBodyBytes = 200_000_000 }, paths: [] },
  { name: 'requestBufferBytes below 64 KiB (and so below the default maxBodyBytes)', edit: c => { c.server = { requestBufferBytes: 1000 } }, paths: ['/server/requestBufferBytes', '/routes/0/maxBodyBytes'] },
  { name: 'requestBuffering not a boolean', edit: c => { c.routes[0].requestBuffering = 'yes' }, paths: ['/routes/0/requestBuffering'] },
]

t.test('configuration checks', async (t) => {
  for (const row of rows) {
    const c = minimal()
    row.edit(c)
    const problems = problemsOf(c)
    t.same(problems.map(p => p.path).sort(), [...row.paths].sort(), row.name)
    if (row.match !== undefined) t.match(problems.map(p => p.message).join('\n'), row.match, `${row.name}: message mentions ${String(row.match)}`)
  }
})

t.test('workers: auto resolves to the cores on PostgreSQL', async (t) => {
  const c = minimal()
  c.server = { workers: 'auto' }
  c.database = { url: 'postgres://db/x' }
  t.equal(loadConfigText(stringify(c), { env: {}, baseDir: '/srv/gw', cores: 4 }).server.workers, 4)
})

// fix-data-dir-memory-url: `dataDir: memory://` in gateway.yaml was resolved as a path
// (/srv/gw/memory:), so the embedded store made a directory named `memory:` and kept the
// sessions on disk — the opposite of what the value asks for
t.test('dataDir memory:// reaches the embedded store as the in-memory database', async (t) => {
  const c = minimal()
  c.database = { dataDir: 'memory://' }
  t.equal(loadConfigText(stringify(c), { env: {}, baseDir: '/srv/gw', cores: 4 }).database.dataDir, 'memory://')
  c.database = { dataDir: 'sessions' }
  t.equal(loadConfigText(stringify(c), { env: {}, baseDir: '/srv/gw', cores: 4 }).database.dataDir, '/srv/gw/sessions', 'a path is still resolved against the file')
})
