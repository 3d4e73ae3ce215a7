import t from 'tap'
import type { IncomingMessage } from 'node:http'
import { WebSocket } from 'ws'
import { baseConfig, goodClaims, makeKey, signWith, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startWsUpstream } from '../fixtures/ws-upstream.js'

// A websocket route in front of a real `ws` server: the upgrade request goes through the
// same auth pipeline as any request, and the identity headers are the gateway's, not the client's.

type Opened = { ok: true, ws: WebSocket } | { ok: false, status: number, body: string }

/** opens a client websocket; resolves with it, or with the HTTP answer that refused the upgrade */
function open (url: string, headers: Record<string, string>): Promise<Opened> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers, handshakeTimeout: 5000 })
    ws.once('open', () => resolve({ ok: true, ws }))
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => { resolve({ ok: false, status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }); ws.terminate() })
      res.on('error', () => resolve({ ok: false, status: res.statusCode ?? 0, body: '' }))
    })
    ws.once('error', (err) => reject(err))
  })
}

function nextMessage (ws: WebSocket): Promise<{ data: Buffer, isBinary: boolean }> {
  return new Promise((resolve, reject) => {
    ws.once('message', (data, isBinary) => resolve({ data: Buffer.isBuffer(data) ? data : Buffer.from(data as ArrayBuffer), isBinary }))
    ws.once('error', reject)
  })
}

t.test('websocket route', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startWsUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'chat', prefix: '/ws', upstream: upstream.url, rewritePrefix: '/chat', websocket: true, auth: 'required', scopes: { GET: ['chat'], '*': ['chat'] } },
  ]))
  const wsUrl = `${gw.wsUrl}/ws/room1?lang=en`

  t.test('a valid token: the upgrade passes, messages round-trip, identity is the token\'s', async (t) => {
    const token = signWith(key, goodClaims({ sub: 'alice', scope: 'chat' }))
    // a page on another origin: the gateway does not judge Origin (README "Browser WebSockets"), it forwards it
    const opened = await open(wsUrl, { authorization: `Bearer ${token}`, 'x-user-id': 'mallory', 'X-User-Scopes': 'admin', origin: 'https://elsewhere.example' })
    t.ok(opened.ok, 'the upgrade succeeded')
    if (!opened.ok) return
    const ws = opened.ws
    t.teardown(() => ws.terminate())

    ws.send('hello')
    const text = await nextMessage(ws)
    t.equal(text.data.toString(), 'echo:hello', 'a text message round-trips')
    const bytes = Buffer.from([0, 1, 2, 250, 255])
    ws.send(bytes)
    const bin = await nextMessage(ws)
    t.ok(bin.isBinary && bin.data.equals(bytes), 'a binary message round-trips byte-exact')

    t.equal(upstream.upgrades.length, 1, 'the upstream saw one upgrade')
    const req = upstream.upgrades[0] as IncomingMessage
    t.equal(req.url, '/chat/room1?lang=en', 'path rewritten, query kept')
    t.equal(req.headers['x-user-id'], 'alice', 'x-user-id from the token')
    t.equal(req.rawHeaders.filter((h, i) => i % 2 === 0 && h.toLowerCase() === 'x-user-id').length, 1, 'only one x-user-id: the spoofed one is gone')
    t.equal(req.headers['x-user-scopes'], 'chat', 'x-user-scopes from the token, not the client\'s "admin"')
    t.equal(req.headers.authorization, undefined, 'the token is not forwarded')
    t.equal(req.headers['x-forwarded-for'], '127.0.0.1', 'x-forwarded-for set by the gateway')
    t.equal(req.headers.origin, 'https://elsewhere.example', 'the client\'s Origin reaches the upstream, which can check it')

    const closed = new Promise<number>(resolve => ws.once('close', (code) => resolve(code)))
    ws.close(1000)
    t.equal(await closed, 1000, 'a clean close goes through')
  })

  const refusals: Array<[name: string, headers: Record<string, string>, status: number, code: string]> = [
    ['no token', {}, 401, 'missing_token'],
    ['no token, spoofed identity', { 'x-user-id': 'alice', 'x-user-scopes': 'chat' }, 401, 'missing_token'],
    ['a token signed by another key', { authorization: `Bearer ${signWith(makeKey('EdDSA'), goodClaims({ scope: 'chat' }))}` }, 401, 'token_invalid_signature'],
    ['an expired token', { authorization: `Bearer ${signWith(key, goodClaims({ scope: 'chat', iat: 1000, exp: 1600 }))}` }, 401, 'token_expired'],
    ['alg none', { authorization: `Bearer ${Buffer.from('{"alg":"none","typ":"at+jwt"}').toString('base64url')}.${Buffer.from(JSON.stringify(goodClaims({ scope: 'chat' }))).toString('base64url')}.` }, 401, 'token_invalid_algorithm'],
    ['garbage', { authorization: 'Bearer abc' }, 401, 'token_malformed'],
    ['a valid token without the scope', { authorization: `Bearer ${signWith(key, goodClaims({ scope: 'other' }))}` }, 403, 'insufficient_scope'],
  ]
  for (const [name, headers, status, code] of refusals) {
    t.test(`refused: ${name}`, async (t) => {
      const upgradesBefore = upstream.upgrades.length
      const connectionsBefore = upstream.connections()
      const opened = await open(wsUrl, headers)
      t.notOk(opened.ok, 'the upgrade is refused')
      if (opened.ok) { opened.ws.terminate(); return }
      t.equal(opened.status, status, `status ${status}`)
      t.equal(JSON.parse(opened.body).code, code, `code ${code}`)
      t.equal(upstream.upgrades.length, upgradesBefore, 'the upstream saw no upgrade')
      t.equal(upstream.connections(), connectionsBefore, 'the upstream saw no connection at all')
    })
  }

  t.test('the gateway still serves upgrades after the refusals', async (t) => {
    const opened = await open(wsUrl, { authorization: `Bearer ${signWith(key, goodClaims({ sub: 'bob', scope: 'chat' }))}` })
    t.ok(opened.ok)
    if (!opened.ok) return
    t.teardown(() => opened.ws.terminate())
    opened.ws.send('again')
    t.equal((await nextMessage(opened.ws)).data.toString(), 'echo:again')
    t.equal(upstream.upgrades[upstream.upgrades.length - 1]?.headers['x-user-id'], 'bob')
  })
})

t.test('plain routes beside and below a websocket route reach their own upstream', async (t) => {
  // the WebSocket route's prefix belongs to @fastify/http-proxy in Fastify's router; a plain
  // route nested under it must still win for its own paths (longest prefix)
  const key = makeKey('EdDSA')
  const wsUp = await startWsUpstream()
  const plain = await startUpstream()
  t.teardown(() => wsUp.close())
  t.teardown(() => plain.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'chat', prefix: '/ws', upstream: wsUp.url, websocket: true, auth: 'public', allowShadow: true },
    { name: 'nested', prefix: '/ws/plain', upstream: plain.url, rewritePrefix: '/nested', auth: 'required' },
    { name: 'beside', prefix: '/other', upstream: plain.url, auth: 'public' },
  ]))
  const bearer = { authorization: `Bearer ${signWith(key, goodClaims({ sub: 'carol' }))}` }
  const rows: Array<[path: string, headers: Record<string, string>, status: number, upstreamUrl: string | undefined]> = [
    ['/ws/plain/x?y=1', bearer, 200, '/nested/x?y=1'],
    ['/WS/Plain/x', bearer, 200, '/nested/x'],
    ['/ws/plain', bearer, 200, '/nested'],
    ['/ws/plain/x', {}, 401, undefined],
    ['/other/z', {}, 200, '/other/z'],
  ]
  for (const [path, headers, status, upstreamUrl] of rows) {
    const before = plain.requests.length
    const res = await fetch(`${gw.url}${path}`, { headers })
    await res.arrayBuffer()
    t.equal(res.status, status, `${path}: ${status}`)
    t.equal(plain.requests.length > before ? plain.requests[plain.requests.length - 1]?.url : undefined, upstreamUrl, `${path}: upstream saw ${String(upstreamUrl)}`)
  }
  const wsPlainHttp = await fetch(`${gw.url}/ws/elsewhere`)
  await wsPlainHttp.arrayBuffer()
  t.equal(wsPlainHttp.status, 426, 'the rest of /ws still goes to the WebSocket route\'s upstream')
  const opened = await open(`${gw.wsUrl}/ws/room`, {})
  t.ok(opened.ok, 'and upgrades there still work')
  if (opened.ok) opened.ws.terminate()
})
