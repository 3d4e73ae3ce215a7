import t from 'tap'
import { connect } from 'node:http2'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { RawClient, requestBytes } from '../fixtures/raw-client.js'
import { startRawUpstream } from '../fixtures/raw-upstream.js'
import { testCertificate } from '../fixtures/tls.js'

// Found by an adversarial review of the hostile-upstream side after issue 8:
// - an upstream's `204` (or `304`, or any answer to HEAD, or to an HTTP/1.0 client) with a
//   `Trailer` field: Node refuses to write it, but only after it has set the status line's
//   reason and "no body" on the response; the 502 that followed was written as
//   `HTTP/1.1 502 No Content`, `content-length: 96`, and no body — a keep-alive client waited
//   for ever, and a pipelining one read the next response as that body;
// - over HTTP/2, an upstream repeating a single-value field (`ETag: "a"`, `ETag: "b"`, a
//   common nginx add_header mistake): Node stored the headers, refused them, and the 502
//   reused them and was refused too — the stream never got an answer;
// - an upstream sending 103 Early Hints without end: every one was written to a client that
//   did not read them (64 MB for 8,000 hints), with no backpressure.
// Now the header list is made writable before it is written (src/proxy/response-headers.ts
// writableHeaderList), what a refused writeHead left behind is undone before the 502, and at
// most two hints are relayed per request.

/** an upstream speaking raw HTTP/1.1: the answer for each request is `answer(path)` */
async function rawUpstream (t: { teardown: (fn: () => unknown) => void }, answer: (path: string, method: string) => string): Promise<string> {
  return (await startRawUpstream(t, (req, socket) => { socket.write(answer(req.path, req.method)) })).url
}

const OK = 'HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello'

t.test('a Trailer field on a response that cannot carry one', async (t) => {
  const upstream = await rawUpstream(t, (path) => {
    if (path.endsWith('/204')) return 'HTTP/1.1 204 No Content\r\nTrailer: x-checksum\r\n\r\n'
    if (path.endsWith('/304')) return 'HTTP/1.1 304 Not Modified\r\nTrailer: x-checksum\r\nETag: "v1"\r\n\r\n'
    if (path.endsWith('/chunked')) return 'HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx-checksum: 1\r\n\r\n'
    if (path.endsWith('/length')) return 'HTTP/1.1 200 OK\r\nTrailer: x-checksum\r\ncontent-length: 5\r\n\r\nhello'
    return OK
  })
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'open', prefix: '/open', upstream, auth: 'public' }]))
  const host: [string, string] = ['Host', 'gateway.test']
  for (const [label, method, path, status] of [
    ['204 + Trailer', 'GET', '/open/204', 204],
    ['304 + Trailer', 'GET', '/open/304', 304],
    ['HEAD of a chunked response with Trailer', 'HEAD', '/open/chunked', 200],
    ['Content-Length + Trailer', 'GET', '/open/length', 200],
  ] as const) {
    const client = await RawClient.connect(gw.url)
    // two requests on one connection, written together (pipelined)
    await client.send(Buffer.concat([requestBytes(method, path, [host]), requestBytes('GET', '/open/next', [host])]))
    const first = await client.response({ head: method === 'HEAD' })
    t.equal(first.status, status, `${label}: ${status}, not 502`)
    t.equal(first.headers.trailer, undefined, `${label}: no Trailer field`)
    const second = await client.response()
    t.equal(second.status, 200, `${label}: the next response on the connection is its own`)
    t.equal(second.body.toString(), 'hello', `${label}: with its own body`)
    client.destroy()
  }
  // an HTTP/1.0 client cannot take chunks: the body without the Trailer field
  const old = await RawClient.connect(gw.url)
  await old.send(Buffer.from('GET /open/chunked HTTP/1.0\r\nHost: gateway.test\r\n\r\n', 'latin1'))
  const res = await old.response()
  t.equal(res.status, 200, 'HTTP/1.0: 200')
  t.equal(res.body.toString(), 'hello', 'HTTP/1.0: the body')
  old.destroy()
})

t.test('HTTP/2: a repeated single-value field gets an answer', async (t) => {
  const upstream = await rawUpstream(t, () => 'HTTP/1.1 200 OK\r\nETag: "a"\r\nETag: "b"\r\nLocation: /x\r\nLocation: /y\r\ncontent-length: 5\r\n\r\nhello')
  const cert = testCertificate(t)
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'open', prefix: '/open', upstream, auth: 'public' }], {
    server: { tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2: true },
  }))
  const session = connect(`https://127.0.0.1:${gw.port}`, { ca: cert.certPem })
  t.teardown(() => session.close())
  const answer = await new Promise<{ status: number, etag: unknown, location: unknown, body: string }>((resolve, reject) => {
    const stream = session.request({ ':path': '/open/x' })
    let status = 0
    let etag: unknown
    let location: unknown
    let body = ''
    stream.setTimeout(5000, () => reject(new Error('no answer within 5 s')))
    stream.on('response', (h) => { status = Number(h[':status']); etag = h.etag; location = h.location })
    stream.on('data', (c: Buffer) => { body += c.toString() })
    stream.on('end', () => resolve({ status, etag, location, body }))
    stream.on('error', reject)
    stream.end()
  })
  t.equal(answer.status, 200, 'answered')
  t.equal(answer.etag, '"a"', 'the first ETag')
  t.equal(answer.location, '/x', 'the first Location')
  t.equal(answer.body, 'hello', 'the body')
})

t.test('103 Early Hints without end are not all written to the client', async (t) => {
  const hint = 'HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n\r\n'
  const upstream = await rawUpstream(t, () => hint.repeat(200) + OK)
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'open', prefix: '/open', upstream, auth: 'public' }]))
  const client = await RawClient.connect(gw.url)
  await client.send(requestBytes('GET', '/open/x', [['Host', 'gateway.test']]))
  const res = await client.response()
  client.destroy()
  t.equal(res.status, 200, 'the response arrives')
  t.ok(res.interim.length >= 1 && res.interim.length <= 2, `hints relayed: ${res.interim.length} of 200`)
})
