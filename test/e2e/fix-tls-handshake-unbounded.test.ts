/**
 * fix-tls-handshake-unbounded (a hostile review of operations, 2026-12-05): on the TLS
 * listener a connection that sent no ClientHello, or five bytes of one, stayed open for two
 * minutes (Node's default handshake timeout) — sockets held at no cost to their sender, where
 * the plain listener drops a silent connection at server.requestTimeout. And once the timeout
 * did fire, the gateway's client-error handler answered the TLS failure with an HTTP 400 that
 * waited for the handshake that never came: the socket stayed open anyway. The handshake now
 * has min(requestTimeout, 10 s), and a TLS failure closes the socket.
 *
 * Real sockets against the real listener, with and without HTTP/2.
 */
import t from 'tap'
import { connect } from 'node:net'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { testCertificate } from '../fixtures/tls.js'

const REQUEST_TIMEOUT_MS = 1_000
const SLACK_MS = 2_500
const cert = testCertificate(t)

/** how long until the gateway closes a connection that sends `bytes` and then nothing (Infinity: still open when the test gave up) */
async function closedAfter (port: number, bytes: Buffer | undefined): Promise<number> {
  return await new Promise((resolve) => {
    const startMs = performance.now()
    const s = connect(port, '127.0.0.1', () => { if (bytes !== undefined) s.write(bytes) })
    s.on('data', () => {})
    s.on('error', () => {})
    const giveUp = setTimeout(() => { resolve(Infinity); s.destroy() }, REQUEST_TIMEOUT_MS + 2 * SLACK_MS)
    s.on('close', () => { clearTimeout(giveUp); resolve(performance.now() - startMs) })
  })
}

for (const http2 of [true, false]) {
  t.test(`TLS listener${http2 ? ' with HTTP/2' : ''}`, async (t) => {
    const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'r', prefix: '/r', upstream: 'http://127.0.0.1:9', auth: 'public' }], {
      server: { requestTimeout: `${REQUEST_TIMEOUT_MS}ms`, tls: { certFile: cert.certFile, keyFile: cert.keyFile }, http2 },
    }))
    const rows: Array<[name: string, bytes: Buffer | undefined]> = [
      ['a connection that sends nothing', undefined],
      ['five bytes of a TLS record header, then silence', Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00])],
    ]
    for (const [name, bytes] of rows) {
      const ms = await closedAfter(gw.port, bytes)
      t.ok(ms < REQUEST_TIMEOUT_MS + SLACK_MS, `${name}: closed after ${Number.isFinite(ms) ? `${ms.toFixed(0)} ms` : 'more than the test waited'} (requestTimeout ${REQUEST_TIMEOUT_MS} ms)`)
    }
  })
}
