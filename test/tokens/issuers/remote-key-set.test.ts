import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { createServer } from 'node:net'
import { IssuerKeysErrorCode } from '../../../src/tokens/issuers/errors.js'
import { KeySetState, type KeySetChange } from '../../../src/tokens/issuers/remote-key-set.js'
import { FakeTime, keyPair, makeSet, options, publicJwk, recordingLogger, runFor, startJwksServer } from './helpers.js'

const MIN = 30_000 // REMOTE_KEY_SET_DEFAULTS.minRefreshIntervalMs
const rsaA = keyPair('RSA')
const rsaB = keyPair('RSA')
const rsaC = keyPair('RSA')
const ec = keyPair('P-256')
const ed = keyPair('Ed25519')

async function setup (t: Test, overrides: Partial<Parameters<typeof options>[0]> = {}) {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsaA, { kid: 'a', alg: 'RS256', use: 'sig' }), publicJwk(ec, { kid: 'e' })] }
  const time = new FakeTime()
  const log = recordingLogger()
  const set = makeSet(t, options({ issuer: server.origin, jwksUri: server.jwksUrl, clock: time.clock, timers: time.timers, logger: log, ...overrides }))
  return { server, time, log, set }
}

t.test('fetched at start without blocking; key() is a sync lookup by kid and alg', async (t) => {
  const { server, set } = await setup(t)
  t.equal(set.status.state, KeySetState.pending)
  set.start()
  // start() returned before any byte arrived
  t.equal(set.key('a', 'RS256'), undefined, 'no key before the first fetch ends')
  t.equal(set.status.state, KeySetState.pending)
  await set.whenSettled()
  t.equal(server.hits('/jwks'), 1)
  t.equal(set.status.state, KeySetState.ready)
  t.equal(set.status.keys, 2)
  t.same(set.status.kids, ['a', 'e'])
  t.ok(set.key('a', 'RS256')?.equals(rsaA.publicKey), 'kid a for RS256')
  t.equal(set.key('a', 'ES256'), undefined, 'an RSA key never serves ES256')
  t.equal(set.key('a', 'HS256'), undefined, 'HS256 never')
  t.ok(set.key('e', 'ES256')?.equals(ec.publicKey), 'kid e for ES256 (no alg on the JWK)')
  t.equal(set.key('zzz', 'RS256'), undefined, 'unknown kid')
  t.ok(set.key(undefined, 'RS256')?.equals(rsaA.publicKey), 'no kid: the only RS256 key')
  t.ok(set.key(undefined, 'ES256')?.equals(ec.publicKey), 'no kid: the only ES256 key')
  t.equal(set.key('__proto__', 'RS256'), undefined)
  const entry = set.remoteKey('a', 'RS256')
  t.equal(entry?.key, set.key('a', 'RS256'), 'remoteKey() is the same lookup')
  t.equal(entry?.pem, rsaA.publicKey.export({ type: 'spki', format: 'pem' }), 'with the PEM fast-jwt needs')
  t.same(entry?.algorithms, ['RS256'])

  // a lookup is never I/O: many misses, no request
  for (let i = 0; i < 10_000; i++) set.key(`miss-${i}`, 'RS256')
  t.equal(server.hits('/jwks'), 1, 'key() never fetches')
  set.start() // idempotent
  t.equal(server.hits('/jwks'), 1)
})

t.test('without kid, a key is chosen only when exactly one serves the algorithm', async (t) => {
  const { server, set } = await setup(t)
  server.jwks = { keys: [publicJwk(rsaA, { kid: 'a' }), publicJwk(rsaB, { kid: 'b' }), publicJwk(ed, { kid: 'd' })] }
  set.start()
  await set.whenSettled()
  t.equal(set.key(undefined, 'RS256'), undefined, 'two RSA keys: ambiguous')
  t.ok(set.key(undefined, 'EdDSA')?.equals(ed.publicKey))
})

t.test('an unreachable IdP never throws; status says why; keys arrive when it is back', async (t) => {
  // a port nobody listens on
  const probe = createServer()
  await new Promise<void>(resolve => probe.listen(0, '127.0.0.1', resolve))
  const deadPort = (probe.address() as { port: number }).port
  await new Promise<void>(resolve => probe.close(() => resolve()))

  const time = new FakeTime()
  const log = recordingLogger()
  const dead = makeSet(t, options({ issuer: 'https://idp.example.test', jwksUri: `http://127.0.0.1:${deadPort}/jwks`, clock: time.clock, timers: time.timers, logger: log }))
  t.doesNotThrow(() => dead.start())
  await dead.whenSettled()
  t.equal(dead.status.state, KeySetState.failed)
  t.equal(dead.status.lastError?.code, IssuerKeysErrorCode.network)
  t.match(dead.status.lastError?.message, /ECONNREFUSED/)
  t.equal(dead.key('a', 'RS256'), undefined)
  t.equal(dead.status.nextRefreshAt, time.now + MIN, 'retries after the cooldown')
  t.ok(log.lines.some(l => l.level === 'warn' && l.obj.code === IssuerKeysErrorCode.network))

  // the same through a server that answers 503, then recovers
  const { server, time: time2, set } = await setup(t)
  server.handler = (_req, res) => { res.writeHead(503).end() }
  set.start()
  await set.whenSettled()
  t.equal(set.status.state, KeySetState.failed)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.httpStatus)
  t.equal(await set.refetchForUnknownKid('a'), false, 'an unknown kid within the cooldown does not fetch')
  t.equal(server.hits('/jwks'), 1)
  server.handler = undefined
  await runFor(time2, set, MIN)
  t.equal(server.hits('/jwks'), 2)
  t.equal(set.status.state, KeySetState.ready)
  t.equal(set.status.lastError, undefined)
  t.ok(set.key('a', 'RS256'))
})

t.test('refresh honours Cache-Control max-age clamped to [min, max]', async (t) => {
  const rows: Array<[string, Record<string, string>, number]> = [
    ['no Cache-Control → default 10 min', {}, 600_000],
    ['max-age=300 → 5 min', { 'cache-control': 'public, max-age=300' }, 300_000],
    ['max-age=5 → clamped up to min 30 s', { 'cache-control': 'max-age=5' }, MIN],
    ['no-store → min', { 'cache-control': 'no-store' }, MIN],
    ['max-age=86400 → clamped down to max 1 h', { 'cache-control': 'max-age=86400' }, 3_600_000],
    ['max-age=600 with Age: 300 → 5 min', { 'cache-control': 'max-age=600', age: '300' }, 300_000],
  ]
  for (const [name, headers, lifetimeMs] of rows) {
    await t.test(name, async (t) => {
      const { server, time, set } = await setup(t)
      server.jwksHeaders = headers
      set.start()
      await set.whenSettled()
      const s = set.status
      t.equal(s.expiresAt! - s.lastSuccessAt!, lifetimeMs, 'freshness lifetime')
      const refreshInMs = Math.max(MIN, Math.floor(lifetimeMs * 0.8))
      t.equal(s.nextRefreshAt! - s.lastSuccessAt!, refreshInMs, 'refresh before expiry (80 %, not under the cooldown)')
      await runFor(time, set, refreshInMs - 1)
      t.equal(server.hits('/jwks'), 1, 'not yet')
      await runFor(time, set, 1)
      t.equal(server.hits('/jwks'), 2, 'refreshed in the background, no request needed')
      t.equal(set.status.state, KeySetState.ready)
    })
  }
})

t.test('a key the IdP stopped publishing stops verifying after the next successful refresh', async (t) => {
  const { server, time, set, log } = await setup(t)
  server.jwks = { keys: [publicJwk(rsaA, { kid: 'a' }), publicJwk(rsaB, { kid: 'b' })] }
  const changes: KeySetChange[] = []
  set.onChange(c => changes.push(c))
  set.start()
  await set.whenSettled()
  t.same(changes.map(c => [c.added.map(k => k.kid), c.removed.map(k => k.kid)]), [[['a', 'b'], []]])
  const keyB = set.key('b', 'RS256')
  const remoteB = set.currentKeys().find(k => k.kid === 'b')

  server.jwks = { keys: [publicJwk(rsaB, { kid: 'b' }), publicJwk(rsaC, { kid: 'c' })] }
  t.ok(set.key('a', 'RS256'), 'a verifies until the refresh')
  await runFor(time, set, 480_000) // 80 % of the default 10 min
  t.equal(server.hits('/jwks'), 2)
  t.equal(set.key('a', 'RS256'), undefined, 'a is gone')
  t.ok(set.key('c', 'RS256'), 'c arrived')
  t.equal(set.key('b', 'RS256'), keyB, 'b kept its KeyObject')
  t.equal(set.currentKeys().find(k => k.kid === 'b'), remoteB, 'and its RemoteKey object')
  t.equal(set.remoteKey('b', 'RS256'), remoteB)
  t.same(changes.slice(1).map(c => [c.added.map(k => k.kid), c.removed.map(k => k.kid), c.keys.map(k => k.kid)]), [[['c'], ['a'], ['b', 'c']]])
  t.ok(log.lines.some(l => l.level === 'info' && l.msg.includes('keys updated')))

  // the same document again: no change event
  await runFor(time, set, 480_000)
  t.equal(server.hits('/jwks'), 3)
  t.equal(changes.length, 2)
})

t.test('stale-if-error: a failing refresh keeps the keys for staleIfErrorMs, then they stop verifying', async (t) => {
  const staleIfErrorMs = 10 * 60_000
  const { server, time, set, log } = await setup(t, { staleIfErrorMs })
  const changes: KeySetChange[] = []
  set.onChange(c => changes.push(c))
  set.start()
  await set.whenSettled()
  const { expiresAt, staleUntil } = set.status
  t.equal(staleUntil! - expiresAt!, staleIfErrorMs)

  server.handler = (_req, res) => { res.writeHead(500).end() }
  await runFor(time, set, expiresAt! - time.now - 1)
  t.equal(set.status.state, KeySetState.ready, 'still fresh')
  t.ok(set.status.consecutiveFailures >= 1, 'the early refresh failed')
  await runFor(time, set, 2)
  t.equal(set.status.state, KeySetState.stale, 'past freshness, failing: stale')
  t.ok(set.key('a', 'RS256'), 'stale keys still verify')
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.httpStatus)

  const hitsBefore = server.hits('/jwks')
  await runFor(time, set, staleUntil! - time.now)
  t.ok(set.key('a', 'RS256'), 'up to the bound itself')
  const retries = server.hits('/jwks') - hitsBefore
  t.ok(retries >= 19 && retries <= 21, `retried once per cooldown (${retries} in 10 min)`)
  // the clock alone decides, even if the timer that drops the keys has not fired (a busy loop)
  time.now += 1
  t.equal(set.key('a', 'RS256'), undefined, 'past the bound: refused, before any timer ran')
  t.equal(set.status.state, KeySetState.failed)
  t.equal(await set.refetchForUnknownKid('a'), false, 'an expired kid is not "known"')
  time.now -= 1
  await runFor(time, set, 1)
  t.equal(set.key('a', 'RS256'), undefined, 'past the bound: refused')
  t.equal(set.key(undefined, 'RS256'), undefined)
  t.equal(set.status.state, KeySetState.failed)
  t.equal(set.status.keys, 0)
  t.same(changes.at(-1)?.removed.map(k => k.kid), ['a', 'e'], 'listeners hear the removal at the bound')
  t.ok(log.lines.some(l => l.level === 'error' && l.msg.includes('expired')))

  server.handler = undefined
  await runFor(time, set, MIN)
  t.equal(set.status.state, KeySetState.ready, 'back when a fetch succeeds')
  t.ok(set.key('a', 'RS256'))
  t.same(changes.at(-1)?.added.map(k => k.kid), ['a', 'e'])
})

t.test('a document with no usable key is a failed refresh, not "remove every key"', async (t) => {
  const { server, time, set } = await setup(t)
  set.start()
  await set.whenSettled()
  server.jwks = { keys: [publicJwk(ec, { kid: 'x', use: 'enc' })] }
  await runFor(time, set, 480_000)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.noUsableKeys)
  t.ok(set.key('a', 'RS256'), 'the last good keys stay')
  server.jwks = { keys: Array.from({ length: 101 }, (_, i) => publicJwk(ec, { kid: `k${i}` })) }
  await runFor(time, set, MIN)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.tooManyKeys)
  t.ok(set.key('a', 'RS256'))
})

t.test('1,000 concurrent unknown kids cost one fetch; within the cooldown, none', async (t) => {
  const { server, time, set } = await setup(t)
  set.start()
  await set.whenSettled()
  t.equal(server.hits('/jwks'), 1)

  const flood = (): Promise<boolean[]> => Promise.all(Array.from({ length: 1000 }, () => set.refetchForUnknownKid(randomBytes(8).toString('hex'))))
  t.same(new Set(await flood()), new Set([false]), 'within the cooldown after the start fetch')
  t.equal(server.hits('/jwks'), 1, 'no fetch within the cooldown')
  t.equal(set.status.unknownKidThrottled, 1000)

  await runFor(time, set, MIN)
  t.same(new Set(await flood()), new Set([false]))
  t.equal(server.hits('/jwks'), 2, 'exactly one fetch for the whole flood')
  t.equal(set.status.unknownKidFetches, 1)
  t.same(new Set(await flood()), new Set([false]))
  t.equal(server.hits('/jwks'), 2, 'and the next flood finds the cooldown running')

  // a real rotation: the new kid is found on demand once the cooldown allows it
  server.jwks = { keys: [...server.jwks.keys, publicJwk(rsaC, { kid: 'new' })] }
  t.equal(await set.refetchForUnknownKid('new'), false, 'cooldown still running')
  await runFor(time, set, MIN)
  t.equal(await set.refetchForUnknownKid('new'), true)
  t.ok(set.key('new', 'RS256'))
  t.equal(await set.refetchForUnknownKid('new'), true, 'a known kid answers at once')
  t.equal(server.hits('/jwks'), 3)
})

t.test('unknown kids during the first fetch join it', async (t) => {
  const { server, set } = await setup(t)
  let release: () => void = () => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  server.handler = (_req, res) => {
    gate.then(() => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(server.jwks))
    }, () => {})
  }
  set.start()
  const answers = Promise.all(Array.from({ length: 1000 }, (_, i) => set.refetchForUnknownKid(i === 0 ? 'a' : `k${i}`)))
  release()
  const got = await answers
  t.equal(got[0], true, 'the kid that the first fetch brings is found')
  t.equal(got.filter(Boolean).length, 1)
  t.equal(server.hits('/jwks'), 1, 'one request in total')
})

t.test('private key material in a JWKS: that key ignored and logged once at error level', async (t) => {
  const { server, time, set, log } = await setup(t)
  server.jwks = { keys: [{ ...rsaB.privateKey.export({ format: 'jwk' }), kid: 'leak' }, publicJwk(rsaA, { kid: 'a' })] }
  set.start()
  await set.whenSettled()
  t.equal(set.key('leak', 'RS256'), undefined)
  t.ok(set.key('a', 'RS256'))
  t.same(set.status.ignoredKeys, [{ index: 0, kid: 'leak', reason: 'private_key_material' }])
  const errors = () => log.lines.filter(l => l.level === 'error' && l.obj.reason === 'private_key_material')
  t.equal(errors().length, 1)
  t.notMatch(JSON.stringify(log.lines), /"d":/, 'the private member is never logged')
  await runFor(time, set, 480_000)
  t.equal(server.hits('/jwks'), 2)
  t.equal(errors().length, 1, 'not again for the same document')
})

t.test('a throwing listener neither breaks the refresh nor the other listeners', async (t) => {
  const { set, log } = await setup(t)
  let heard = 0
  set.onChange(() => { throw new Error('boom') })
  const off = set.onChange(() => { heard++ })
  set.start()
  await set.whenSettled()
  t.equal(heard, 1)
  t.equal(set.status.state, KeySetState.ready)
  t.ok(log.lines.some(l => l.level === 'error' && l.msg.includes('listener threw')))
  off()
})

t.test('close() aborts a running fetch and stops the schedule', async (t) => {
  const { server, time, set } = await setup(t)
  let arrived: () => void = () => {}
  const requested = new Promise<void>(resolve => { arrived = resolve })
  server.handler = () => { arrived() /* and never answers */ }
  set.start()
  await requested
  const started = Date.now()
  set.close()
  await set.whenSettled()
  t.ok(Date.now() - started < 1_000, 'the hung fetch was aborted')
  t.equal(time.nextAt, undefined, 'no timer left')
  t.equal(set.status.nextRefreshAt, undefined)
  t.equal(await set.refetchForUnknownKid('a'), false, 'no fetch after close')
  set.start()
  t.equal(server.hits('/jwks'), 1, 'start after close does nothing')
})

t.test('one set shared by many callers: status counts one fetch per cycle', async (t) => {
  const { server, time, set } = await setup(t)
  set.start()
  set.start()
  await Promise.all([set.whenSettled(), set.whenSettled()])
  await runFor(time, set, MIN)
  await Promise.all(Array.from({ length: 50 }, () => set.refetchForUnknownKid('nope')))
  t.equal(server.hits('/jwks'), 2)
  t.equal(set.status.fetches, 2)
  t.equal(set.status.failures, 0)
})

t.test('cooldownMs, when set, bounds unknown-kid fetches apart from the refresh floor', async (t) => {
  const { server, time, set } = await setup(t, { minRefreshIntervalMs: 60_000, cooldownMs: 10_000 })
  server.handler = (_req, res) => { res.writeHead(503).end() }
  set.start()
  await set.whenSettled()
  t.equal(set.status.nextRefreshAt, time.now + 60_000, 'a failed fetch is retried after minRefreshIntervalMs')
  time.advance(9_999)
  t.equal(await set.refetchForUnknownKid('a'), false)
  t.equal(server.hits('/jwks'), 1, 'cooldown running')
  server.handler = undefined
  time.advance(1)
  const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => set.refetchForUnknownKid(i === 0 ? 'a' : `x${i}`)))
  t.equal(answers[0], true, 'found once the cooldown is over, before the retry')
  t.equal(server.hits('/jwks'), 2, 'one fetch for the whole flood')
})
