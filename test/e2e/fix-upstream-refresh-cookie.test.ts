import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, makeKey, raw, startGateway } from '../fixtures/gateway.js'
import { rawRequest, requestBytes } from '../fixtures/raw-client.js'

// Issue 8, item 6: an upstream could still plant or clear the gateway's refresh cookie:
// `__Host-portcullis-rt =x` and the same with a TAB before `=` passed the Set-Cookie filter,
// and browsers trim cookie names (RFC 6265 §5.2). `Clear-Site-Data` passed too. Every
// Set-Cookie is parsed as a browser would; anything that would set, clear or shadow the
// refresh cookie is dropped, and only the gateway may send Clear-Site-Data.

const key = makeKey('EdDSA')
const NAME = '__Host-portcullis-rt'

const HOSTILE: Array<[name: string, value: string]> = [
  ['plain', `${NAME}=planted; Path=/; Secure; HttpOnly`],
  ['space before =', `${NAME} =planted; Path=/; Secure`],
  ['TAB before =', `${NAME}\t=planted; Path=/; Secure`],
  ['space after the name and before the value', `${NAME} = planted; Path=/; Secure`],
  ['leading space', ` ${NAME}=planted; Path=/; Secure`],
  ['leading TAB', `\t${NAME}=planted; Path=/; Secure`],
  ['other case', '__HOST-PORTCULLIS-RT=planted; Path=/; Secure'],
  ['cleared with Max-Age=0', `${NAME}=; Max-Age=0; Path=/; Secure`],
  ['cleared with a past Expires', `${NAME}=x; Expires=Thu, 01 Jan 1970 00:00:00 GMT; Path=/; Secure`],
  ['shadowed on a longer path (sent first by browsers)', `${NAME}=planted; Path=/auth; Secure`],
  ['nameless cookie whose value is name=value', `=${NAME}=planted; Path=/; Secure`],
  ['nameless cookie, space after =', `= ${NAME}=planted; Path=/; Secure`],
  ['no = at all (a nameless cookie to browsers)', `${NAME}; Path=/; Secure`],
]
const BENIGN: Array<[name: string, value: string]> = [
  ['another cookie', 'theme=dark; Path=/'],
  ['a name that only starts like it', `${NAME}2=ok; Path=/`],
  ['a value that mentions it', `note=${NAME}; Path=/`],
]

t.test('no Set-Cookie from an upstream can set, clear or shadow the refresh cookie', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    // raw header lines: Node's setHeader would refuse the TAB variants on our side of the test
    const lines = [...HOSTILE, ...BENIGN].map(([, v]) => `Set-Cookie: ${v}\r\n`).join('')
    res.socket!.write('HTTP/1.1 200 OK\r\n' + lines + 'Clear-Site-Data: "cookies", "storage"\r\nContent-Length: 2\r\n\r\nok')
    res.socket!.end()
  })
  t.teardown(() => upstream.close())
  // `cookies: pass`, so this is rule 3 alone (it holds in every mode; edge-checklist S14 has the others)
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public', cookies: 'pass' }]))
  const res = await raw(gw.url, '/open/x')
  t.equal(res.status, 200)
  t.equal(res.body, 'ok')
  const got = ([] as string[]).concat(res.headers['set-cookie'] ?? [])
  for (const [name, value] of HOSTILE) t.notOk(got.includes(value.trim()) || got.includes(value), `dropped: ${name}`)
  t.notOk(got.some(c => c.toLowerCase().replace(/^[\s=]+/, '').startsWith(NAME.toLowerCase()) && !c.startsWith(`${NAME}2=`)), 'nothing that names the refresh cookie is left')
  t.same(got, BENIGN.map(([, v]) => v), 'the other cookies pass, in order')
  t.equal(res.headers['clear-site-data'], undefined, 'Clear-Site-Data dropped')
})

t.test('in 103 Early Hints too', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.socket!.write(`HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\nSet-Cookie: ${NAME}=planted; Path=/\r\nClear-Site-Data: "*"\r\n\r\n`)
    res.socket!.write('HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok')
    res.socket!.end()
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' }]))
  const res = await rawRequest(gw.url, requestBytes('GET', '/open/x', [['Host', 'a.example']]))
  t.equal(res.status, 200)
  const hints = res.interim.find(h => h.status === 103)
  t.ok(hints, 'the 103 reached the client')
  t.equal(hints?.headers.link, '</app.css>; rel=preload', 'with its Link')
  t.equal(hints?.headers['set-cookie'], undefined, 'without a Set-Cookie')
  t.equal(hints?.headers['clear-site-data'], undefined, 'without Clear-Site-Data')
})

t.test('with forwardRefreshCookie the upstream owns the cookie, and on a `cookies: pass` route its Set-Cookie passes', async (t) => {
  const upstream = await startUpstream((_req, res) => {
    res.setHeader('set-cookie', [`${NAME}=upstream-owned; Path=/; Secure`])
    res.end('ok')
  })
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public', cookies: 'pass' }], { identity: { forwardRefreshCookie: true } }))
  const res = await raw(gw.url, '/open/x')
  t.same(res.headers['set-cookie'], [`${NAME}=upstream-owned; Path=/; Secure`])
})
