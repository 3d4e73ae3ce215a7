import t, { type Test } from 'tap'
import { IssuerKeysErrorCode } from '../../../src/tokens/issuers/errors.js'
import { KeySetState } from '../../../src/tokens/issuers/remote-key-set.js'
import { FakeTime, keyPair, makeSet, options, publicJwk, startJwksServer, type Handler, type JwksServer } from './helpers.js'

// Hostile or broken JWKS servers, for real over 127.0.0.1. Time is real here (the deadline is
// what is under test); the fake timers only keep the refresh schedule from running.
const TIMEOUT_MS = 400
const MAX_BYTES = 64 * 1024
const FIFTY_MB = 50 * 1024 * 1024
const rsa = keyPair('RSA')

async function setup (t: Test): Promise<{ server: JwksServer, set: ReturnType<typeof makeSet> }> {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'a' })] }
  const set = makeSet(t, options({
    issuer: server.origin,
    jwksUri: server.jwksUrl,
    fetchTimeoutMs: TIMEOUT_MS,
    maxResponseBytes: MAX_BYTES,
    timers: new FakeTime().timers,
  }))
  return { server, set }
}

/** writes `total` bytes of `fill` in 64 KiB chunks, honouring backpressure, until done or the client leaves */
function stream (res: Parameters<Handler>[1], total: number, fill: string, written: { bytes: number }): void {
  const chunk = Buffer.alloc(64 * 1024, fill)
  const pump = (): void => {
    while (written.bytes < total && !res.destroyed) {
      written.bytes += chunk.length
      if (!res.write(chunk)) { res.once('drain', pump); return }
    }
    if (!res.destroyed) res.end()
  }
  pump()
}

interface Row {
  name: string
  handler: (server: JwksServer, written: { bytes: number }) => Handler
  code: string
  /** the fetch must have lasted at least this long (proves the deadline, not an earlier stop) */
  minMs?: number
}

const rows: Row[] = [
  {
    name: 'slow loris: headers, then one byte every 50 ms (passes inactivity timers, not the deadline)',
    handler: () => (req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"keys":[')
      const drip = setInterval(() => { if (!res.destroyed) res.write(' ') }, 50)
      req.socket.on('close', () => clearInterval(drip))
    },
    code: IssuerKeysErrorCode.timeout,
    minMs: TIMEOUT_MS - 50,
  },
  {
    name: 'headers never come',
    handler: () => () => { /* accept and stay silent */ },
    code: IssuerKeysErrorCode.timeout,
    minMs: TIMEOUT_MS - 50,
  },
  {
    name: '50 MB chunked body',
    handler: (_s, written) => (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.write('{"keys":["')
      stream(res, FIFTY_MB, 'A', written)
    },
    code: IssuerKeysErrorCode.tooLarge,
  },
  {
    name: '50 MB announced in Content-Length',
    handler: (_s, written) => (_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(FIFTY_MB) })
      stream(res, FIFTY_MB, ' ', written)
    },
    code: IssuerKeysErrorCode.tooLarge,
  },
  {
    name: 'not JSON (an HTML error page with 200)',
    handler: () => (_req, res) => { res.writeHead(200, { 'content-type': 'text/html' }).end('<html><body>maintenance</body></html>') },
    code: IssuerKeysErrorCode.invalidJson,
  },
  {
    name: 'not UTF-8',
    handler: () => (_req, res) => { res.writeHead(200).end(Buffer.from([0x7b, 0xff, 0xfe, 0x7d])) },
    code: IssuerKeysErrorCode.invalidJson,
  },
  {
    name: 'JSON but not a key set',
    handler: () => (_req, res) => { res.writeHead(200).end('[{"kty":"RSA"}]') },
    code: IssuerKeysErrorCode.invalidJwks,
  },
  {
    name: 'a redirect, even same-origin, is not followed',
    handler: (server) => (_req, res) => { res.writeHead(302, { location: `${server.origin}/real-jwks` }).end() },
    code: IssuerKeysErrorCode.redirect,
  },
  {
    name: 'a permanent redirect to another scheme is not followed',
    handler: () => (_req, res) => { res.writeHead(308, { location: 'file:///etc/passwd' }).end() },
    code: IssuerKeysErrorCode.redirect,
  },
  {
    name: '404',
    handler: () => (_req, res) => { res.writeHead(404).end('{"keys":[]}') },
    code: IssuerKeysErrorCode.httpStatus,
  },
  {
    name: '204 No Content',
    handler: () => (_req, res) => { res.writeHead(204).end() },
    code: IssuerKeysErrorCode.httpStatus,
  },
]

for (const row of rows) {
  t.test(row.name, async (t) => {
    const { server, set } = await setup(t)
    const written = { bytes: 0 }
    const hostile = row.handler(server, written)
    server.handler = (req, res) => {
      // the redirect target would serve a good set: it must never be asked
      if (req.url === '/real-jwks') { res.writeHead(200).end(JSON.stringify(server.jwks)); return }
      hostile(req, res)
    }
    const started = Date.now()
    set.start()
    await set.whenSettled()
    const elapsedMs = Date.now() - started
    t.equal(set.status.lastError?.code, row.code, row.code)
    t.equal(set.status.state, KeySetState.failed)
    t.equal(set.key('a', 'RS256'), undefined)
    t.ok(elapsedMs < TIMEOUT_MS + 1_500, `bounded (${elapsedMs} ms)`)
    if (row.minMs !== undefined) t.ok(elapsedMs >= row.minMs, `ran until the deadline (${elapsedMs} ms)`)
    t.equal(server.hits('/real-jwks'), 0, 'no redirect followed')
    if (written.bytes > 0) t.ok(written.bytes < FIFTY_MB / 4, `the client hung up early (${(written.bytes / 1024 / 1024).toFixed(1)} MB written)`)
  })
}

t.test('a hostile refresh keeps the last good keys (stale-if-error)', async (t) => {
  const server = await startJwksServer()
  t.teardown(() => server.close())
  server.jwks = { keys: [publicJwk(rsa, { kid: 'a' })] }
  const time = new FakeTime()
  time.now = Date.now()
  const set = makeSet(t, options({ issuer: server.origin, jwksUri: server.jwksUrl, fetchTimeoutMs: TIMEOUT_MS, maxResponseBytes: MAX_BYTES, clock: time.clock, timers: time.timers }))
  set.start()
  await set.whenSettled()
  t.ok(set.key('a', 'RS256'))
  const written = { bytes: 0 }
  server.handler = (_req, res) => { res.writeHead(200); stream(res, FIFTY_MB, 'x', written) }
  time.advance(30_000)
  t.equal(await set.refetchForUnknownKid('b'), false)
  t.equal(set.status.lastError?.code, IssuerKeysErrorCode.tooLarge)
  t.ok(set.key('a', 'RS256'), 'still served')
  t.equal(set.status.state, KeySetState.ready)
})
