import t from 'tap'
import { baseConfig, makeKey, raw, startGateway, type RawResponse } from '../fixtures/gateway.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'
import { startUpstream } from '../fixtures/upstream.js'

// fix-cors-missing-on-edge-refusals (left since stop 18): on a gateway with `cors:`, an answer
// refused before any route was known — the edge stage's 400s (an ambiguous path, two Host
// lines), its 501 (a transfer coding other than chunked), a 404 for a path no route has —
// carried no CORS header, so a listed origin's script saw an opaque network error instead of
// the JSON with its stable code (the SDK cannot tell "offline" from "refused"). Now those
// answers carry the `cors:` policy's headers: Access-Control-Allow-Origin and -Credentials
// and the exposed headers for a listed origin, `Vary: Origin` for every origin. Real gateway
// and upstream on 127.0.0.1; raw bytes where the framing is the point.

const APP = 'https://app.example.test'
const EVIL = 'https://evil.example.test'
const key = makeKey('EdDSA')

t.test('answers refused before a route is known carry the CORS policy', async (t) => {
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }])
  config.cors = { origins: [APP], credentials: true }
  const gw = await startGateway(t, config)
  const host = new URL(gw.url).host

  const listed = (res: RawResponse | { headers: Record<string, string | string[] | undefined> }, what: string): void => {
    t.equal(res.headers['access-control-allow-origin'], APP, `${what}: Access-Control-Allow-Origin (absent before the fix)`)
    t.equal(res.headers['access-control-allow-credentials'], 'true', `${what}: credentials`)
    t.match(String(res.headers['access-control-expose-headers']), /www-authenticate/, `${what}: exposed headers`)
    t.match(String(res.headers.vary), /Origin/, `${what}: Vary: Origin`)
  }

  const notFound = await raw(gw.url, '/nowhere/x', { headers: { origin: APP } })
  t.equal(notFound.status, 404)
  t.equal(notFound.json().code, 'route_not_found')
  listed(notFound, 'route_not_found')

  const ambiguous = await raw(gw.url, '/api/%2e%2e/admin', { headers: { origin: APP } })
  t.equal(ambiguous.status, 400)
  t.equal(ambiguous.json().code, 'path_rejected')
  listed(ambiguous, 'path_rejected')

  const twoHosts = await raw(gw.url, '/api/x', { headers: [['host', host], ['host', 'other.example'], ['origin', APP]] })
  t.equal(twoHosts.status, 400)
  t.ok(['bad_host', 'duplicate_header'].includes(twoHosts.json().code), `two Host lines: ${String(twoHosts.json().code)}`)
  listed(twoHosts, 'two Host lines')

  const coding = await rawRequest(gw.url, requestBytes('POST', '/api/x', [['Host', host], ['Origin', APP], ['Transfer-Encoding', 'gzip, chunked']], '0\r\n\r\n'))
  t.equal(coding.status, 501)
  t.equal(coding.json().code, 'unsupported_transfer_encoding')
  listed(coding, 'unsupported_transfer_encoding')

  const unlisted = await raw(gw.url, '/nowhere/x', { headers: { origin: EVIL } })
  t.equal(unlisted.status, 404)
  t.equal(unlisted.headers['access-control-allow-origin'], undefined, 'an origin not listed gets no Access-Control-Allow-Origin')
  t.match(String(unlisted.headers.vary), /Origin/, 'but Vary: Origin')
  t.equal(upstream.requests.length, 0, 'the upstream saw none of them')
})

t.test('without cors: no CORS header on those answers', async (t) => {
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]))
  const res = await raw(gw.url, '/nowhere/x', { headers: { origin: APP } })
  t.equal(res.status, 404)
  t.equal(res.headers['access-control-allow-origin'], undefined, 'nothing opened by default')
})
