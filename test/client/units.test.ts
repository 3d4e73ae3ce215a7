/**
 * The SDK's pure parts, table-driven: token timing (durations, never the gateway's clock),
 * error mapping, the in-realm lock, the cross-tab message check; plus the auth timeout
 * against a real server that never answers.
 */
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { createClient, LocalLocks, TimeoutError } from '../../src/client/index.js'
import { Coordinator } from '../../src/client/coordination.js'
import { errorFromAnswer, parseBearerChallenge, type ErrorAnswer } from '../../src/client/errors.js'
import { decodeJwtPayload, isExpired, marginMs, needsRefresh, tokenFromAnswer } from '../../src/client/token.js'
import { defaultTimers } from '../../src/client/platform.js'
import { rejection, waitFor } from './util.js'

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url')
const jwt = (payload: unknown): string => `${b64({ alg: 'EdDSA', typ: 'at+jwt' })}.${b64(payload)}.sig`

t.test('token timing: a duration counted from when the request was sent', async (t) => {
  const sentAt = 50_000
  const now = 50_400 // the answer took 400 ms
  const gatewayExp = Date.UTC(2030, 0, 1) / 1000 + 300 // the gateway's clock is decades off ours
  const rows: Array<[string, string, unknown, number | undefined, number | undefined]> = [
    ['expires_in wins, the JWT clock is ignored', jwt({ iat: gatewayExp - 300, exp: gatewayExp }), 300, sentAt + 300_000, 300_000],
    ['no expires_in: exp - iat, still a duration', jwt({ iat: gatewayExp - 120, exp: gatewayExp }), undefined, sentAt + 120_000, 120_000],
    ['expires_in 0 is not a lifetime', jwt({ iat: 10, exp: 70 }), 0, sentAt + 60_000, 60_000],
    ['a string expires_in is ignored', jwt({ iat: 10, exp: 70 }), '300', sentAt + 60_000, 60_000],
    ['exp alone: the local clock, last resort', jwt({ exp: 100 }), undefined, 100_000, 100_000 - now],
    ['no timing at all: unknown', jwt({ sub: 'x' }), undefined, undefined, undefined],
    ['not a JWT: unknown', 'opaque-token', Number.NaN, undefined, undefined],
  ]
  for (const [name, value, expiresIn, expiresAtMs, lifetimeMs] of rows) {
    t.match(tokenFromAnswer(value, expiresIn, sentAt, now), { value, expiresAtMs, lifetimeMs }, name)
  }
})

t.test('refresh margin: the configured one, at most a quarter of the lifetime', async (t) => {
  const rows: Array<[lifetimeSec: number, configuredSec: number, marginSec: number]> = [
    [600, 60, 60],
    [300, 60, 60],
    [120, 60, 30],
    [60, 60, 15],
    [600, 0, 0],
  ]
  for (const [lifetimeSec, configuredSec, marginSec] of rows) {
    const token = tokenFromAnswer('x', lifetimeSec, 0, 0)
    t.equal(marginMs(token, configuredSec * 1000), marginSec * 1000, `${lifetimeSec} s token, ${configuredSec} s configured`)
    t.equal(needsRefresh(token, () => (lifetimeSec - marginSec) * 1000 - 1, configuredSec * 1000), false, 'just before the margin')
    t.equal(needsRefresh(token, () => (lifetimeSec - marginSec) * 1000, configuredSec * 1000), true, 'at the margin')
  }
  const unknown = tokenFromAnswer('opaque', undefined, 0, 0)
  t.equal(needsRefresh(unknown, () => 1e15, 60_000), false, 'an unknown lifetime is never refreshed proactively')
  t.equal(isExpired(unknown, () => 1e15), false)
})

t.test('decodeJwtPayload: base64url, UTF-8, and garbage', async (t) => {
  t.same(decodeJwtPayload(jwt({ name: 'Zoë ✓', s: '??>>' })), { name: 'Zoë ✓', s: '??>>' })
  for (const bad of ['', 'a', 'a.', 'a.!!!.c', `a.${Buffer.from('[1]').toString('base64url')}.c`, `a.${Buffer.from('null').toString('base64url')}.c`]) {
    t.equal(decodeJwtPayload(bad), undefined, JSON.stringify(bad))
  }
})

t.test('WWW-Authenticate challenges', async (t) => {
  t.same(parseBearerChallenge('Bearer realm="portcullis", error="invalid_token", error_description="the access token expired"'),
    { error: 'invalid_token', description: 'the access token expired' })
  t.same(parseBearerChallenge('Bearer realm="x", error="insufficient_scope", scope="a b"'), { error: 'insufficient_scope', scope: 'a b' })
  t.same(parseBearerChallenge(null), {})
})

t.test('errors mirror the gateway\'s codes', async (t) => {
  // the gateway's own answer: its code in the portcullis-error header too (plugins/errors.ts)
  const answer = (status: number, code?: string, extra: Partial<ErrorAnswer> = {}): ErrorAnswer =>
    ({ status, gatewayCode: code, code, message: 'm', oauthError: undefined, challenge: {}, retryAfterSec: undefined, requestId: 'r1', ...extra })
  // an upstream's answer: whatever its body and challenge say, no header
  const upstream = (status: number, code?: string, extra: Partial<ErrorAnswer> = {}): ErrorAnswer => answer(status, code, { gatewayCode: undefined, ...extra })
  const rows: Array<[string, ErrorAnswer, string, Record<string, unknown>]> = [
    ['wrong password', answer(401, 'invalid_credentials'), 'InvalidCredentialsError', { code: 'invalid_credentials', status: 401 }],
    ['throttled', answer(429, 'too_many_attempts', { retryAfterSec: 42 }), 'TooManyAttemptsError', { code: 'too_many_attempts', retryAfterSec: 42 }],
    ['refresh refused', answer(400, 'invalid_grant', { oauthError: 'invalid_grant' }), 'SessionEndedError', { code: 'session_ended', reason: 'invalid_grant', status: 400 }],
    ['expired', answer(401, 'token_expired'), 'UnauthorizedError', { code: 'token_expired', status: 401 }],
    ['revoked', answer(401, 'token_revoked'), 'UnauthorizedError', { code: 'token_revoked' }],
    ['upstream 401 token_expired', upstream(401, 'token_expired'), 'UpstreamError', { code: 'upstream_error', upstreamCode: 'token_expired', status: 401, message: 'm' }],
    ['upstream 401, only a challenge', upstream(401, undefined, { challenge: { error: 'invalid_token', description: 'the access token expired' } }), 'UpstreamError', { code: 'upstream_error', status: 401 }],
    ['upstream invalid_grant', upstream(409, 'invalid_grant', { oauthError: 'invalid_grant' }), 'UpstreamError', { code: 'upstream_error', upstreamCode: 'invalid_grant', status: 409 }],
    ['upstream invalid_credentials', upstream(401, 'invalid_credentials'), 'UpstreamError', { upstreamCode: 'invalid_credentials' }],
    ['upstream 429', upstream(429, undefined, { retryAfterSec: 3 }), 'UpstreamError', { status: 429, retryAfterSec: 3 }],
    ['upstream 403 insufficient_scope', upstream(403, 'insufficient_scope'), 'UpstreamError', { status: 403 }],
    ['missing scope', answer(403, 'insufficient_scope', { challenge: { scope: 'reports:read' } }), 'InsufficientScopeError', { scope: 'reports:read' }],
    ['upstream down', answer(502, 'upstream_unavailable'), 'PortcullisError', { code: 'upstream_unavailable', status: 502, requestId: 'r1' }],
    ['store down', answer(503, 'store_unavailable', { retryAfterSec: 5 }), 'PortcullisError', { retryAfterSec: 5 }],
    ['upstream 500, no body', upstream(500), 'UpstreamError', { code: 'upstream_error', upstreamCode: undefined, status: 500 }],
  ]
  for (const [name, a, cls, fields] of rows) {
    const err = errorFromAnswer(a)
    t.equal(err.name, cls, `${name}: ${cls}`)
    t.match(err, fields, `${name}: fields`)
  }
})

t.test('LocalLocks: FIFO, ifAvailable, released when the holder throws', async (t) => {
  const locks = new LocalLocks()
  const order: string[] = []
  let releaseFirst!: () => void
  const first = locks.request('n', {}, async () => { order.push('1 in'); await new Promise<void>((resolve) => { releaseFirst = resolve }); order.push('1 out') })
  const second = locks.request('n', {}, async () => { order.push('2'); throw new Error('boom') })
  const third = locks.request('n', {}, async () => { order.push('3') })
  t.equal(await locks.request('n', { ifAvailable: true }, (lock) => lock), null, 'held: ifAvailable gets null at once')
  t.not(await locks.request('other', { ifAvailable: true }, (lock) => lock), null, 'another name is free')
  await waitFor(() => order.length === 1)
  releaseFirst()
  await first
  t.equal((await rejection(second)).message, 'boom')
  await third
  t.same(order, ['1 in', '1 out', '2', '3'], 'in request order; a throwing holder releases')
  t.not(await locks.request('n', { ifAvailable: true }, (lock) => lock), null, 'free again')
})

t.test('cross-tab messages of the wrong shape are ignored', async (t) => {
  const seen: unknown[] = []
  const key = `units-${process.pid}`
  const coordinator = new Coordinator({ key, locks: new LocalLocks(), channel: (name) => new BroadcastChannel(name), timers: defaultTimers, onMessage: (m) => { seen.push(m) } })
  t.teardown(() => { coordinator.close() })
  const other = new BroadcastChannel(`portcullis:${key}`)
  t.teardown(() => { other.close() })
  for (const bad of [null, 'x', { v: 2, type: 'ended', reason: 'logout' }, { v: 1, type: 'token' }, { v: 1, type: 'token', accessToken: 'a', expiresAtMs: 'soon' }, { v: 1, type: 'boom' }]) {
    other.postMessage(bad)
  }
  other.postMessage({ v: 1, type: 'ended', reason: 'logout' })
  t.ok(await waitFor(() => seen.length > 0))
  t.same(seen, [{ v: 1, type: 'ended', reason: 'logout' }], 'only the well-formed one got through')
})

t.test('an auth request without an answer times out (TimeoutError), against a server that never answers', async (t) => {
  const sockets = new Set<Socket>()
  const server = createServer((s) => { sockets.add(s) })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of sockets) s.destroy(); server.close() })
  const { port } = server.address() as { port: number }
  const c = createClient({ baseUrl: `http://127.0.0.1:${port}`, transport: 'body', authTimeoutMs: 100 })
  t.teardown(() => { c.close() })
  const err = await rejection(c.login('u', 'p'))
  t.ok(err instanceof TimeoutError)
  t.match(err, { code: 'timeout', status: 0 })
  t.equal(c.status, 'unknown')
})

t.test('options are checked at construction', async (t) => {
  t.throws(() => createClient({ transport: 'body' }), TypeError, 'no baseUrl outside a browser')
  t.throws(() => createClient({ baseUrl: 'ftp://x', transport: 'body' }), TypeError)
  t.throws(() => createClient({ baseUrl: 'http://x', transport: 'both' as 'body' }), TypeError)
  t.throws(() => createClient({ baseUrl: 'http://x', transport: 'cookie', refreshTokenStore: { get: async () => 'x', set: async () => {}, clear: async () => {} } }), TypeError,
    'cookie mode never holds a refresh token')
})
