import t from 'tap'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { openStore } from '../../src/sessions/store.js'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'
import { until } from '../fixtures/until.js'

// fix-auth-client-gone-unreported (found by a hostile review, stop 33): a client that sent a
// whole `POST /auth/login` and left while the gateway checked the password (argon2id, ~15 ms)
// left no trace but the security event: the login ran — the throttle counted it, a session was
// created on the right password — yet no decision line was written and
// portcullis_requests_total did not move, because Fastify reports a request on its response's
// `finish` (which never comes) or on onRequestAbort (only while the body is unread). Now such
// a request gets its decision line and its metric as 499 client_closed, once.
// Real parts: a gateway on 127.0.0.1 with the embedded store, raw client sockets.

const key = makeKey('EdDSA')

interface Line { reqId: string, route: string | null, reason: string, status: number }

t.test('a login whose client leaves while its password is checked is reported as 499 client_closed', async (t) => {
  const store = await openStore({ dataDir: 'memory://' })
  await usersAdd(store, { name: 'alice', password: 'pw-alice', scopes: [] })
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, cb) { out += String(chunk); cb() } }))
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
    tokens: { refresh: { transport: 'body' } },
  }), { store, logger })
  const lines = (): Line[] => out.trim().split('\n').filter(Boolean).map(l => JSON.parse(l)).filter(l => l.msg === 'decision')
  const events = (name: string): number => out.split('\n').filter(l => l.includes(`"event":"${name}"`)).length

  const login = async (id: string, password: string, leave: boolean): Promise<void> => {
    const body = JSON.stringify({ username: 'alice', password })
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    await client.send(requestBytes('POST', '/auth/login', [['Host', 'gw.test'], ['X-Request-Id', id], ['Content-Type', 'application/json'], ['Content-Length', String(Buffer.byteLength(body))]], body))
    if (!leave) { t.equal((await client.response()).status, id.startsWith('ok') ? 200 : 401, `${id}: answered`); return }
    // the body is read at once; the password check is still running when the client leaves
    await new Promise(resolve => setTimeout(resolve, 3))
    client.destroy()
  }

  for (const [id, password, event] of [['left-right-password', 'pw-alice', 'login_succeeded'], ['left-wrong-password', 'nope', 'login_failed']] as const) {
    const before = events(event)
    await login(id, password, true)
    await until(`${id}: the login ran to its end`, () => events(event) > before)
    await until(`${id}: its decision line`, () => lines().some(l => l.reqId === id))
    const mine = lines().filter(l => l.reqId === id)
    t.equal(mine.length, 1, `${id}: one decision line`)
    t.match(mine[0], { route: 'auth.login', reason: 'client_closed', status: 499 }, `${id}: 499 client_closed`)
  }
  await login('ok-stays', 'pw-alice', false)
  await until('the answered login\'s line', () => lines().some(l => l.reqId === 'ok-stays'))
  t.equal(lines().filter(l => l.reqId === 'ok-stays').length, 1, 'a login answered in full: one line')
  t.match(lines().find(l => l.reqId === 'ok-stays'), { route: 'auth.login', status: 200 }, 'with its 200')

  const metrics = (await raw(gw.adminUrl, '/metrics')).body
  t.match(metrics, /portcullis_requests_total\{route="auth\.login",status="499",reason="client_closed"\} 2\n/, 'both are counted in portcullis_requests_total')
})
