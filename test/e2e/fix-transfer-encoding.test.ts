import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { chunked, rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Issue 8, item 9: `Transfer-Encoding: gzip, chunked` was accepted and proxied. It is legal
// HTTP (RFC 9112 §6.1), but a proxy that forwards a coding it does not decode invites a
// desync with an upstream that reads the framing differently. Only a lone `chunked` passes;
// any other coding is 501 unsupported_transfer_encoding (as nginx answers), and what Node's
// parser refuses itself (a coding after chunked, CL with TE) is a 400. None reaches the upstream.

const key = makeKey('EdDSA')

t.test('only a lone chunked passes', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const body = chunked(['hello'])

  const refused: Array<[name: string, headers: Array<[string, string]>, status: number, code: string]> = [
    ['gzip, chunked', [['Transfer-Encoding', 'gzip, chunked']], 501, 'unsupported_transfer_encoding'],
    ['deflate, chunked', [['Transfer-Encoding', 'deflate, chunked']], 501, 'unsupported_transfer_encoding'],
    ['identity, chunked', [['Transfer-Encoding', 'identity, chunked']], 501, 'unsupported_transfer_encoding'],
    ['two lines: gzip / chunked', [['Transfer-Encoding', 'gzip'], ['Transfer-Encoding', 'chunked']], 501, 'unsupported_transfer_encoding'],
    // Node lets a request without chunked framing through; its body would run to the end of the connection
    ['gzip alone (no framing)', [['Transfer-Encoding', 'gzip']], 501, 'unsupported_transfer_encoding'],
    // Node's parser refuses these before the gateway sees them (a JSON 400 from the client-error handler)
    ['chunked, chunked', [['Transfer-Encoding', 'chunked, chunked']], 400, 'bad_request'],
    ['two lines: chunked / chunked', [['Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'chunked']], 400, 'bad_request'],
    ['chunked, gzip (chunked not last)', [['Transfer-Encoding', 'chunked, gzip']], 400, 'bad_request'],
    ['Content-Length and Transfer-Encoding', [['Content-Length', '10'], ['Transfer-Encoding', 'chunked']], 400, 'bad_request'],
  ]
  for (const [name, headers, status, code] of refused) {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes('POST', '/open/x', [['Host', 'a.example'], ...headers], body))
    t.equal(res.status, status, `${name}: ${status}`)
    t.equal(res.json().code, code, `${name}: ${code}`)
    t.equal(res.headers.connection, 'close', `${name}: the connection closes (the body's end is unknown)`)
    t.equal(upstream.requests.length, before, `${name}: the upstream never saw it`)
  }

  for (const te of ['chunked', 'Chunked', 'CHUNKED']) {
    const before = upstream.requests.length
    const res = await rawRequest(gw.url, requestBytes('POST', '/open/x', [['Host', 'a.example'], ['Transfer-Encoding', te]], body))
    t.equal(res.status, 200, `${te}: proxied`)
    t.equal(upstream.requests[before]?.body.toString(), 'hello', `${te}: with its body`)
  }
})
