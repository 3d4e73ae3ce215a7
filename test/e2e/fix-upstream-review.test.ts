import t, { type Test } from 'tap'
import type { AddressInfo } from 'node:net'
import { constants as h2constants, connect as h2connect, createServer as createH2Server, type ClientHttp2Session } from 'node:http2'
import { gzipSync } from 'node:zlib'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'
import { startRawUpstream } from '../fixtures/raw-upstream.js'
import { testCertificate } from '../fixtures/tls.js'
import { until } from '../fixtures/until.js'
import { SINGLE_VALUE_H2 } from '../../src/proxy/response-headers.js'

// Found by an adversarial review of what a malicious (or merely odd) upstream can send, each
// reproduced against a real gateway on 127.0.0.1:
// - fix-hints-to-http10: 103 Early Hints were relayed to HTTP/1.0 clients, which read a 1xx
//   as the final response (RFC 9110 §15.2: a server MUST NOT send one to them);
// - fix-h2-single-value-fields: over HTTP/2 a response repeating a field Node holds
//   single-valued but the gateway's list lacked (`User-Agent`, `Range`, `If-None-Match`…) was
//   a 502; the list is now checked against Node's own refusals;
// - fix-h2-205-with-body: a 205 with `Content-Length: 5` reset the HTTP/2 stream (Node ends a
//   205 at its headers), and over HTTP/1.1 its body was relayed (RFC 9110 §15.3.6: none);
// - fix-upstream-transfer-coding: `Transfer-Encoding: gzip, chunked` (or `chunked, gzip`, read
//   until close) was stripped and the still-coded bytes relayed as the body;
// - fix-hints-skip-rules: on a 103 the upstream's `Set-Cookie2` and, on a CORS route, its
//   `Access-Control-*` passed, though the final response drops them (fix-trailers-skip-rules:
//   a `Set-Cookie2` trailer passed too);
// - fix-pipelined-unsafe-runs-early: a POST pipelined behind a GET was forwarded while the
//   GET's response still streamed (RFC 9112 §9.3.2); when that stream broke, the POST had run
//   upstream and its answer was lost.

const key = makeKey('EdDSA')
const HOST: [string, string] = ['Host', 'gateway.test']

const OK = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello'
const HINT = 'HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n'

t.test('fix-hints-to-http10: no 103 Early Hints to an HTTP/1.0 client', async (t) => {
  const up = await startRawUpstream(t, (_req, socket) => { socket.write(HINT); setTimeout(() => socket.write(OK), 20) })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'h', prefix: '/h', upstream: up.url, auth: 'public' }]))
  for (const extra of [[], [['Connection', 'keep-alive']]] as Array<Array<[string, string]>>) {
    const client = await RawClient.connect(gw.url)
    await client.send(`GET /h/x HTTP/1.0\r\n${[HOST, ...extra].map(([n, v]) => `${n}: ${v}\r\n`).join('')}\r\n`)
    const res = await client.response()
    client.destroy()
    const label = extra.length === 0 ? 'HTTP/1.0' : 'HTTP/1.0 keep-alive'
    t.equal(res.status, 200, `${label}: the first status line is the final response's`)
    t.equal(res.interim.length, 0, `${label}: no 103`)
    t.equal(res.body.toString(), 'hello', `${label}: the body`)
  }
  const client = await RawClient.connect(gw.url)
  await client.send(requestBytes('GET', '/h/x', [HOST]))
  const res = await client.response()
  client.destroy()
  t.equal(res.interim[0]?.status, 103, 'an HTTP/1.1 client still gets the hint')
})

t.test('fix-hints-skip-rules: a 103 goes through the final response\'s rules', async (t) => {
  const up = await startRawUpstream(t, (_req, socket) => {
    socket.write('HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nAccess-Control-Allow-Origin: https://evil.example\r\n' +
      'Access-Control-Allow-Credentials: true\r\nSet-Cookie2: sid=planted\r\nLocation: /inner/next\r\nX-Hint: kept\r\n\r\n' +
      'HTTP/1.1 200 OK\r\nAccess-Control-Allow-Origin: https://evil.example\r\nSet-Cookie2: sid=planted\r\ncontent-length: 2\r\n\r\nok')
  })
  const config = baseConfig(key, [
    { name: 'c', prefix: '/c', upstream: up.url, rewritePrefix: '/inner', auth: 'public' },
    { name: 'n', prefix: '/n', upstream: up.url, rewritePrefix: '/inner', auth: 'public', cors: false },
  ])
  config.cors = { origins: ['https://app.example'] }
  const gw = await startGateway(t, config)
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('GET', '/c/x', [HOST, ['Origin', 'https://evil.example']]))
  const res = await client.response()
  const hint = res.interim[0]
  t.equal(hint?.status, 103, 'the hint is relayed')
  t.equal(hint?.headers['set-cookie2'], undefined, 'without Set-Cookie2')
  t.same(Object.keys(hint?.headers ?? {}).filter(n => n.startsWith('access-control-')), [], 'without the upstream\'s Access-Control-* on a CORS route')
  t.equal(hint?.headers.location, '/c/next', 'Location moved back under the route\'s prefix')
  t.equal(hint?.headers['x-hint'], 'kept', 'other fields pass')
  t.equal(res.status, 200)
  t.equal(res.headers['access-control-allow-origin'], undefined, 'the final response drops them too')
  // cors: false — CORS is the upstream's, on hints as on the final response
  await client.send(requestBytes('GET', '/n/x', [HOST, ['Origin', 'https://evil.example']]))
  const own = await client.response()
  t.equal(own.interim[0]?.headers['access-control-allow-origin'], 'https://evil.example', 'cors: false: the upstream\'s pass')
  t.equal(own.interim[0]?.headers['set-cookie2'], undefined, 'cors: false: Set-Cookie2 still dropped')
})

t.test('fix-trailers-skip-rules: trailers go through the same set of rules (Set-Cookie2)', async (t) => {
  const up = await startRawUpstream(t, (_req, socket) => {
    socket.write('HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n' +
      'X-Checksum: abc\r\nSet-Cookie2: sid=planted\r\n\r\n')
  })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'r', prefix: '/r', upstream: up.url, auth: 'public' }]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(requestBytes('GET', '/r/x', [HOST, ['TE', 'trailers']]))
  const res = await client.response()
  t.equal(res.body.toString(), 'ok')
  t.same(res.trailers, { 'x-checksum': 'abc' }, 'the application trailer only')
})

/** one HTTP/2 request; resolves with what arrived, or the stream's error */
function h2Get (session: ClientHttp2Session, path: string): Promise<{ status: number, headers: Record<string, unknown>, body: string, error?: string }> {
  return new Promise((resolve) => {
    const stream = session.request({ ':path': path })
    let status = 0
    let headers: Record<string, unknown> = {}
    let body = ''
    const timer = setTimeout(() => { stream.close(); resolve({ status, headers, body, error: 'timeout' }) }, 5000)
    stream.on('response', (h) => { status = Number(h[':status']); headers = h })
    stream.on('data', (c: Buffer) => { body += c.toString() })
    stream.on('end', () => { clearTimeout(timer); resolve({ status, headers, body }) })
    stream.on('error', (err: Error) => { clearTimeout(timer); resolve({ status, headers, body, error: err.message }) })
    stream.end()
  })
}

/**
 * The header names node:http2 refuses twice in a response, asked of Node itself: every header
 * name it knows (its single-value list is made of these constants), written by an HTTP/2
 * server the way the exchange writes a response.
 */
async function refusedTwiceByNode (t: Test): Promise<string[]> {
  const names = [...new Set(Object.entries(h2constants)
    .filter(([k, v]) => k.startsWith('HTTP2_HEADER_') && typeof v === 'string' && !v.startsWith(':'))
    .map(([, v]) => v as string))]
  t.ok(names.length > 50, `${names.length} names asked of Node`)
  const refused: string[] = []
  const server = createH2Server((req, res) => {
    const name = decodeURIComponent((req.url ?? '/').slice(1))
    try {
      // the way the exchange writes: a flat list, repeated lines as one name with a list of values
      res.writeHead(200, [name, ['a', 'b']] as unknown as Record<string, string>)
      res.end()
    } catch (err) {
      if ((err as { code?: string }).code === 'ERR_HTTP2_HEADER_SINGLE_VALUE') refused.push(name)
      res.stream.close()
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const session = h2connect(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
  session.on('error', () => {})
  try {
    for (const name of names) await h2Get(session, '/' + encodeURIComponent(name))
  } finally {
    session.destroy()
    server.close()
  }
  return refused.sort()
}

t.test('fix-h2-single-value-fields: the list is exactly the fields Node refuses twice in a response', async (t) => {
  t.same([...SINGLE_VALUE_H2].sort(), await refusedTwiceByNode(t), 'SINGLE_VALUE_H2 is what Node refuses')
})

/** a gateway on HTTP/2 (TLS) in front of `upstream`, route /s, and a session to it */
async function h2Gateway (t: Test, upstream: string): Promise<ClientHttp2Session> {
  const cert = testCertificate(t)
  const gw = await startGateway(t, baseConfig(key, [{ name: 's', prefix: '/s', upstream, auth: 'public' }], {
    server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true },
  }))
  const session = h2connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  return session
}

t.test('fix-h2-single-value-fields: over HTTP/2 every field Node holds single-valued, repeated, keeps its first value', async (t) => {
  const up = await startRawUpstream(t, (req, socket) => {
    const name = req.path.slice('/s/'.length)
    socket.write(`HTTP/1.1 200 OK\r\n${name}: a\r\n${name}: b\r\ncontent-length: 5\r\n\r\nhello`)
  })
  const session = await h2Gateway(t, up.url)
  // content-length twice is undici's to refuse; proxy-authorization is hop-by-hop
  const names = (await refusedTwiceByNode(t)).filter(n => n !== 'content-length' && n !== 'proxy-authorization')
  for (const name of names) {
    const res = await h2Get(session, `/s/${name}`)
    t.equal(res.status, 200, `${name} twice: 200${res.error === undefined ? '' : ` (${res.error})`}`)
    t.equal(res.headers[name], 'a', `${name}: the first value`)
    t.equal(res.body, 'hello', `${name}: the body`)
  }
})

t.test('fix-h2-205-with-body: over HTTP/2 a 205 ends cleanly at its headers', async (t) => {
  const up = await startRawUpstream(t, (req, socket) => {
    if (req.path === '/s/205') socket.write('HTTP/1.1 205 Reset Content\r\nContent-Length: 5\r\n\r\nhello')
    else if (req.path === '/s/205-chunked') socket.write('HTTP/1.1 205 Reset Content\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n')
    else socket.write('HTTP/1.1 304 Not Modified\r\nETag: "v"\r\nContent-Length: 5\r\n\r\n')
  })
  const session = await h2Gateway(t, up.url)
  for (const path of ['/s/205', '/s/205-chunked']) {
    const res = await h2Get(session, path)
    t.equal(res.error, undefined, `${path}: the stream ends cleanly`)
    t.equal(res.status, 205, `${path}: 205`)
    t.equal(res.body, '', `${path}: no body`)
  }
  const notModified = await h2Get(session, '/s/304')
  t.equal(notModified.error, undefined, 'a 304 with the representation\'s Content-Length: the stream ends cleanly')
  t.equal(notModified.status, 304)
})

t.test('fix-h2-205-with-body: over HTTP/1.1 a 205 ends at its headers', async (t) => {
  const up = await startRawUpstream(t, (req, socket) => {
    if (req.path.endsWith('/205')) return socket.write('HTTP/1.1 205 Reset Content\r\nContent-Length: 5\r\nTrailer: x-sum\r\n\r\nhello')
    socket.write(OK)
  })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'r', prefix: '/r', upstream: up.url, auth: 'public' }]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  await client.send(Buffer.concat([requestBytes('POST', '/r/205', [HOST, ['Content-Length', '0']]), requestBytes('GET', '/r/next', [HOST])]))
  const first = await client.response()
  t.equal(first.status, 205)
  t.equal(first.headers['content-length'], '0', 'Content-Length: 0 (RFC 9110 §15.3.6)')
  t.equal(first.headers.trailer, undefined, 'no Trailer field: nothing can follow')
  t.equal(first.body.length, 0, 'no body')
  const second = await client.response()
  t.equal(second.status, 200, 'the next response on the connection is its own')
  t.equal(second.body.toString(), 'hello')
})

t.test('fix-upstream-transfer-coding: a transfer coding besides chunked is a 502, and its connection is not reused', async (t) => {
  const gz = gzipSync(Buffer.from('{"hello":"world"}'))
  const chunk = Buffer.concat([Buffer.from(`${gz.length.toString(16)}\r\n`), gz, Buffer.from('\r\n0\r\n\r\n')])
  const up = await startRawUpstream(t, (req, socket) => {
    const head = (te: string): Buffer => Buffer.from(`HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: ${te}\r\n\r\n`)
    switch (req.path) {
      case '/t/gzip-chunked': socket.write(Buffer.concat([head('gzip, chunked'), chunk])); break
      case '/t/chunked-gzip': socket.write(head('chunked, gzip')); socket.end(gz); break
      case '/t/identity': socket.write(head('identity')); socket.end('plain'); break
      case '/t/upper': socket.write(Buffer.concat([head('Chunked'), Buffer.from('5\r\nhello\r\n0\r\n\r\n')])); break
      default: socket.write(OK)
    }
  })
  const gw = await startGateway(t, baseConfig(key, [{ name: 't', prefix: '/t', upstream: up.url, auth: 'public' }]))
  const client = await RawClient.connect(gw.url)
  t.teardown(() => client.destroy())
  for (const path of ['/t/gzip-chunked', '/t/chunked-gzip', '/t/identity']) {
    await client.send(requestBytes('GET', path, [HOST]))
    const res = await client.response()
    t.equal(res.status, 502, `${path}: 502`)
    t.match(res.body.toString('latin1'), /"code":"upstream_unavailable"/, `${path}: upstream_unavailable`)
    t.notOk(res.body.includes(gz.subarray(0, 2)), `${path}: none of the coded bytes`)
    const conn = up.seen.find(r => r.path === path)?.conn ?? 0
    await until(`${path}: the upstream connection closes`, () => up.closed.has(conn), 2000).catch(() => {})
    t.ok(up.closed.has(conn), `${path}: the upstream connection is closed, not reused`)
  }
  await client.send(requestBytes('GET', '/t/upper', [HOST]))
  const upper = await client.response()
  t.equal(upper.status, 200, '`Chunked` is chunked')
  t.equal(upper.body.toString(), 'hello')
  await client.send(requestBytes('GET', '/t/after', [HOST]))
  t.equal((await client.response()).status, 200, 'the client connection still serves requests')
})

t.test('fix-pipelined-unsafe-runs-early: an unsafe request pipelined behind a response still in progress waits for it', async (t) => {
  let slowDoneAt = Infinity
  const up = await startRawUpstream(t, (req, socket) => {
    if (req.path === '/p/break') {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nAAAAA')
      setTimeout(() => socket.destroy(), 300)
    } else if (req.path === '/p/slow') {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nAAAAA')
      setTimeout(() => { slowDoneAt = performance.now(); socket.write('BBBBB') }, 300)
    } else if (req.method === 'GET') {
      socket.write(OK)
    } else {
      socket.write('HTTP/1.1 201 Created\r\nContent-Length: 7\r\n\r\ncreated')
    }
  })
  const gw = await startGateway(t, baseConfig(key, [{ name: 'p', prefix: '/p', upstream: up.url, auth: 'public' }]))
  const post = (path: string): Buffer => requestBytes('POST', path, [HOST, ['Content-Length', '2']], '{}')

  t.test('the response before it breaks: never forwarded', async (t) => {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    await client.send(Buffer.concat([requestBytes('GET', '/p/break', [HOST]), post('/p/orders-1'), requestBytes('DELETE', '/p/orders-2', [HOST])]))
    await client.closed
    await new Promise(resolve => setTimeout(resolve, 200))
    t.same(up.seen.filter(r => r.path.startsWith('/p/orders')).map(r => r.method), [], 'neither the POST nor the DELETE reached the upstream')
  })

  t.test('the response before it finishes: forwarded then, answered in order', async (t) => {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    await client.send(Buffer.concat([requestBytes('GET', '/p/slow', [HOST]), post('/p/orders-3')]))
    const first = await client.response()
    t.equal(first.body.toString(), 'AAAAABBBBB', 'the GET\'s response whole')
    const second = await client.response()
    t.equal(second.status, 201, 'then the POST\'s')
    const seen = up.seen.find(r => r.path === '/p/orders-3')
    t.ok(seen !== undefined && seen.atMs >= slowDoneAt, 'the POST reached the upstream only once the GET\'s response was complete')
  })

  t.test('many waiting on one connection: answered in order, one close listener', async (t) => {
    const warnings: string[] = []
    const onWarning = (w: Error): void => { warnings.push(w.name) }
    process.on('warning', onWarning)
    t.teardown(() => { process.off('warning', onWarning) })
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    const paths = Array.from({ length: 20 }, (_, i) => `/p/many-${i}`)
    await client.send(Buffer.concat([requestBytes('GET', '/p/slow', [HOST]), ...paths.map(post)]))
    t.equal((await client.response()).status, 200, 'the GET first')
    let created = 0
    for (let i = 0; i < paths.length; i++) if ((await client.response()).status === 201) created++
    t.equal(created, paths.length, 'then every POST')
    t.same(up.seen.filter(r => r.path.startsWith('/p/many-')).map(r => r.path), paths, 'forwarded one after another, in order')
    t.same(warnings, [], 'no MaxListenersExceededWarning')
  })

  t.test('safe requests still run side by side', async (t) => {
    const client = await RawClient.connect(gw.url)
    t.teardown(() => client.destroy())
    slowDoneAt = Infinity
    await client.send(Buffer.concat([requestBytes('GET', '/p/slow', [HOST]), requestBytes('GET', '/p/fast', [HOST])]))
    await client.response()
    await client.response()
    const fast = up.seen.filter(r => r.path === '/p/fast').pop()
    t.ok(fast !== undefined && fast.atMs < slowDoneAt, 'the second GET was forwarded while the first streamed')
  })
})
