import t from 'tap'
import { Denylist } from '../../src/pipeline/denylist.js'
import { LiveSockets } from '../../src/proxy/live-sockets.js'
import type { VerifiedToken } from '../../src/tokens/verified-token.js'
import { makeKey } from '../fixtures/keys.js'
import { problemsOf } from '../fixtures/config-problems.js'

// fix-duration-overflow (a stop 43 review finding): durations had no upper bound. A Node timer
// waits at most 2^31 − 1 ms and fires after 1 ms beyond it, so `routes[].timeout: 30d` passed
// `check` and answered every request 504 within 3 ms, `revocation.reconcileInterval: 30d`
// reloaded the denylist every millisecond, and `1e400` / `.inf` (Infinity) passed as well;
// `refreshTokenTtl: 999999999d` passed `check` and `start`, then every login was a 500
// (an invalid Date). Each duration now has a maximum the schema checks: 24d for the ones that
// become timers, 3650d for lifetimes that only enter date arithmetic.

const ed = makeKey('EdDSA')

function minimal (): Record<string, any> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: ed.privatePem }] },
    routes: [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:4001', auth: 'required' }],
  }
}

const rows: Array<{ name: string, edit: (c: Record<string, any>) => void, paths: string[] }> = [
  { name: 'a route timeout of 30d', edit: c => { c.routes[0].timeout = '30d' }, paths: ['/routes/0/timeout'] },
  { name: 'a route timeout of 1e400 seconds (Infinity)', edit: c => { c.routes[0].timeout = Infinity }, paths: ['/routes/0/timeout'] },
  { name: 'a route idleTimeout of 2147484s', edit: c => { c.routes[0].idleTimeout = '2147484s' }, paths: ['/routes/0/idleTimeout'] },
  { name: 'a route timeout of 24d', edit: c => { c.routes[0].timeout = '24d' }, paths: [] },
  { name: 'a route timeout of 2073600 seconds (24d as a number)', edit: c => { c.routes[0].timeout = 2_073_600 }, paths: [] },
  { name: 'revocation.reconcileInterval 30d', edit: c => { c.revocation = { reconcileInterval: '30d' } }, paths: ['/revocation/reconcileInterval'] },
  { name: 'revocation.heartbeatInterval 99999999999999999999h', edit: c => { c.revocation = { heartbeatInterval: '99999999999999999999h' } }, paths: ['/revocation/heartbeatInterval'] },
  { name: 'server.shutdownTimeout 25d', edit: c => { c.server = { shutdownTimeout: '25d' } }, paths: ['/server/shutdownTimeout'] },
  { name: 'database.statementTimeout 30d', edit: c => { c.database = { statementTimeout: '30d' } }, paths: ['/database/statementTimeout'] },
  { name: 'tokens.refreshTokenTtl 999999999d', edit: c => { c.tokens.refreshTokenTtl = '999999999d'; c.tokens.sessionMaxAge = '999999999d' }, paths: ['/tokens/refreshTokenTtl', '/tokens/sessionMaxAge'] },
  { name: 'tokens.sessionMaxAge Infinity', edit: c => { c.tokens.sessionMaxAge = Infinity }, paths: ['/tokens/sessionMaxAge'] },
  { name: 'tokens.refreshTokenTtl 90d, sessionMaxAge 3650d', edit: c => { c.tokens.refreshTokenTtl = '90d'; c.tokens.sessionMaxAge = '3650d' }, paths: [] },
  { name: 'login.throttle.maxLockout 30d', edit: c => { c.login = { throttle: { maxLockout: '30d' } } }, paths: [] },
]

for (const row of rows) {
  t.test(row.name, async t => {
    const doc = minimal()
    row.edit(doc)
    const problems = problemsOf(doc)
    t.same(problems.map(p => p.path).sort(), [...row.paths].sort(), 'the problems\' paths')
    for (const p of problems) t.match(p.message, /at most (24d|3650d)/, `${p.path} names its maximum`)
  })
}

t.test('a WebSocket whose token outlives a timer is not closed at once', async t => {
  // an identity provider's token may live longer than a timer can wait (its maxTokenLifetime
  // is a lifetime, up to 3650d): the socket's expiry timer is re-armed instead of firing after 1 ms
  const now = Date.now()
  const sockets = new LiveSockets(new Denylist(), () => now)
  const closed: number[] = []
  const token = { expMs: now + 30 * 86_400_000, skewMs: 0, claims: { jti: 'j1', sub: 'u1', iat: now / 1000 }, revocationJti: 'j1', key: undefined } as unknown as VerifiedToken
  const forget = sockets.add('/ws', token, (code) => { closed.push(code) }, sockets.configured())
  t.teardown(forget)
  // the overflowed timer of the code before fired after 1 ms; give it a few event-loop turns
  await new Promise(resolve => setTimeout(resolve, 50))
  t.same(closed, [], 'still open')
})
