import t from 'tap'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { rawRequest } from '../fixtures/raw-client.js'

// fix-admin-http10-probe-refused (left by stop 30): the admin listener's DNS-rebinding guard
// refused a request without a Host with 421, HTTP/1.0 included — so an old health checker
// (HAProxy's `option httpchk GET /healthz` sends HTTP/1.0 with no Host line) saw the gateway as
// down. No browser sends a request without Host, so a rebinding page cannot either: HTTP/1.0
// without Host is answered now. HTTP/1.1 without Host stays a 400 (RFC 9112 §3.2), and a
// Host naming another site stays a 421 in either version. Raw bytes on a real socket: the
// clients a test would use add a Host line of their own.

const key = makeKey('EdDSA')

t.test('the admin listener and requests without Host', async (t) => {
  const gw = await startGateway(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]))
  const port = new URL(gw.adminUrl).port

  const healthz = await rawRequest(gw.adminUrl, 'GET /healthz HTTP/1.0\r\n\r\n')
  t.equal(healthz.status, 200, 'HTTP/1.0 without Host: /healthz answers (421 before the fix)')
  const metrics = await rawRequest(gw.adminUrl, 'GET /metrics HTTP/1.0\r\nUser-Agent: probe\r\n\r\n')
  t.equal(metrics.status, 200, 'HTTP/1.0 without Host: /metrics answers')
  t.ok(metrics.body.toString().includes('portcullis_'), 'with the metrics')

  const rebound = await rawRequest(gw.adminUrl, `GET /metrics HTTP/1.0\r\nHost: attacker.example:${port}\r\n\r\n`)
  t.equal(rebound.status, 421, 'HTTP/1.0 naming another host: still 421')
  const twice = await rawRequest(gw.adminUrl, `GET /metrics HTTP/1.0\r\nHost: 127.0.0.1:${port}\r\nHost: attacker.example\r\n\r\n`)
  t.equal(twice.status, 421, 'HTTP/1.0 with two Host lines: still 421')
  const http11 = await rawRequest(gw.adminUrl, 'GET /metrics HTTP/1.1\r\nConnection: close\r\n\r\n')
  t.equal(http11.status, 400, 'HTTP/1.1 without Host: 400')
  t.notOk(http11.body.toString().includes('portcullis_'), 'and no metrics')
})
