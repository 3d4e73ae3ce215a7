import t from 'tap'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { openStore } from '../../src/sessions/store.js'

// Found by an adversarial review after issue 9: a malformed /auth/login body got an answer
// with `"code": "ERR_INVALID_CHAR"` and none of the gateway's headers. Its message holds a `…`,
// which went into WWW-Authenticate's error_description; Node refused that header value and
// the error answer was replaced by Node's own. error_description now holds only the
// characters RFC 6750 §3 allows, whatever the message.

// RFC 6750 §3: %x20-21 / %x23-5B / %x5D-7E inside the quotes
const DESCRIPTION = /error_description="([^"]*)"/

t.test('an error whose message is not ASCII keeps its stable code and headers', async (t) => {
  const store = await openStore({ dataDir: 'memory://' })
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]), { store })
  for (const body of ['[1,2]', '{"username":1,"password":"x"}', '{"username":"u"}', 'null']) {
    const res = await raw(gw.url, '/auth/login', { method: 'POST', headers: { 'content-type': 'application/json' }, body })
    t.equal(res.status, 400, `${body}: 400`)
    t.equal(res.json().code, 'bad_request', `${body}: the gateway's code`)
    t.ok(res.headers['x-request-id'], `${body}: the gateway's headers`)
    t.equal(res.headers['cache-control'], 'no-store', `${body}: no-store`)
    const challenge = String(res.headers['www-authenticate'])
    const description = DESCRIPTION.exec(challenge)?.[1]
    t.ok(description !== undefined && /^[\x20\x21\x23-\x5b\x5d-\x7e]+$/.test(description), `${body}: error_description within RFC 6750 §3`)
  }
})
