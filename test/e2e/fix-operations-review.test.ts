import t, { type Test } from 'tap'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { stringify } from 'yaml'
import { pino } from 'pino'
import { ConfigError } from '../../src/errors.js'
import { loadConfigFile, loadConfigText } from '../../src/config/load.js'
import { buildGateway } from '../../src/app.js'
import { listen } from '../../src/server.js'
import { openStore } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { baseConfig, makeKey, PUBLIC_SCHEME, raw } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'

// Found by an adversarial review of the operations surface after issue 12:
// - fix-config-error-quotes-secret: an unquoted secret that starts with `*` is a YAML alias;
//   yaml's "Unresolved alias" error quoted it, and the reload answer (422), the error log and
//   `portcullis check` printed the secret;
// - fix-admin-api-input-500: the admin API answered 500 for a NUL in a user name, session id
//   or jti (the store refuses NUL) and for a jti `exp` past the store's timestamps;
// - fix-security-event-drops-hash: config_reloaded / config_reload_failed named the file's
//   hash `hash`, a field name security events always drop (it is how a password hash would be
//   named), so the events never carried it;
// - fix-yaml-error-quotes-secret (a later review): yaml's syntax-error messages quote the
//   tokens around the fault, so a stray bracket put the next line's secret in all three too;
// - fix-admin-long-user-name (a later review): the admin listener kept Fastify's 100-character
//   path-parameter limit, so a user of 101–128 characters could not be listed or revoked;
// - fix-metrics-status-label: an upstream that answers the status a client asks for
//   (httpbin's /status/991) made one requests_total series per code the client chose.

const ADMIN_TOKEN = 'admin-token-for-the-operations-review-0123456789'
const SECRET = 'AdminTokenDoNotLog0123456789abcdefXYZ'

async function start (t: Test, config: Record<string, any>, deps: Record<string, any> = {}) {
  const dir = t.testdir({})
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify(config))
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(file, { env: {} })
  let out = ''
  const logger = pino({ level: 'info' }, new Writable({ write (chunk, _enc, done) { out += String(chunk); done() } }))
  const gateway = await buildGateway(load(), { logger, loadConfig: load, ...deps })
  const l = await listen(gateway, { handleSignals: false })
  t.teardown(() => l.shutdown())
  return { url: `${PUBLIC_SCHEME}://127.0.0.1:${l.port}`, adminUrl: `http://127.0.0.1:${l.adminPort}`, file, gateway, output: () => out }
}

const admin = async (url: string, method: string, body?: unknown): Promise<{ status: number, json: any, text: string }> => {
  const res = await fetch(url, {
    method,
    headers: { authorization: `Bearer ${ADMIN_TOKEN}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  })
  const text = await res.text()
  let json: any
  try { json = JSON.parse(text) } catch {}
  return { status: res.status, json, text }
}

t.test('fix-config-error-quotes-secret: an alias error names the line, never the value', async (t) => {
  const text = `server:\n  port: 0\nadmin:\n  token: *${SECRET}\n`
  try {
    loadConfigText(text)
    t.fail('the file must be refused')
  } catch (err) {
    t.ok(err instanceof ConfigError, 'a ConfigError, listed like any problem')
    t.notMatch((err as Error).message, SECRET, 'the value is not in the message')
    t.match((err as ConfigError).problems[0], { line: 4 }, 'the problem names its line')
  }

  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await start(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'public' }], { admin: { token: ADMIN_TOKEN } }))
  writeFileSync(gw.file, stringify(baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'public' }], { admin: { token: ADMIN_TOKEN } })).replace(`token: ${ADMIN_TOKEN}`, `token: *${SECRET}`))
  const res = await admin(`${gw.adminUrl}/admin/reload`, 'POST')
  t.equal(res.status, 422, 'the reload is refused')
  t.notMatch(res.text, SECRET, 'the answer does not carry the value')
  t.notMatch(gw.output(), SECRET, 'nor does the log')
  t.match(gw.output(), /"event":"config_reload_failed"[^\n]*"configHash":"[0-9a-f]{64}"/, 'fix-security-event-drops-hash: the failure event carries the hash in force')
})

t.test('fix-yaml-error-quotes-secret: a syntax error names its kind, line and column, never the text', async (t) => {
  // yaml's messages quote the tokens around the fault: a stray `]` on one line put the next
  // line's admin token into the reload answer, the error log and `check`
  const cases: Array<[string, string, number]> = [
    ['a stray bracket before a quoted secret', `server: { host: 127.0.0.1, port: 0 } ]\nadmin:\n  token: "${SECRET}"\n`, 1],
    ['an unknown tag handle', `admin:\n  token: !e!${SECRET} x\n`, 2],
    ['an unclosed quote', `database:\n  url: "postgres://gw:${SECRET}@127.0.0.1/db\n`, 3],
    ['an invalid escape', `admin:\n  token: "\\q${SECRET}"\n`, 2],
    ['a tab as indentation', `admin:\n\ttoken: ${SECRET}\n`, 2],
    ['a flow mapping left open', `admin: { token: ${SECRET}\nserver: [\n`, 2],
    ['a key given twice', `${SECRET}: 1\n${SECRET}: 2\n`, 2],
    ['a multi-line implicit key', `admin:\n  ${SECRET}\n  x: 1\n`, 2],
  ]
  for (const [name, text, line] of cases) {
    try {
      loadConfigText(text)
      t.fail(`${name}: the file must be refused`)
    } catch (err) {
      t.ok(err instanceof ConfigError, `${name}: a ConfigError`)
      t.notMatch((err as Error).message, SECRET.slice(0, 12), `${name}: no part of the value in the message`)
      t.ok((err as ConfigError).problems.some(p => p.line === line), `${name}: a problem at line ${line}`)
      t.ok((err as ConfigError).problems.every(p => /\(column \d+\)$/.test(p.message)), `${name}: each names its column`)
    }
  }

  const key = makeKey('EdDSA')
  const config = baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'public' }], { admin: { token: ADMIN_TOKEN } })
  const gw = await start(t, config)
  writeFileSync(gw.file, `server: { host: 127.0.0.1, port: 0 } ]\n${stringify({ ...config, server: undefined })}extra: "${SECRET}"\n`)
  const res = await admin(`${gw.adminUrl}/admin/reload`, 'POST')
  t.equal(res.status, 422, 'the reload is refused')
  t.notMatch(res.text, SECRET.slice(0, 12), 'the answer does not carry the value')
  t.notMatch(gw.output(), SECRET.slice(0, 12), 'nor does the log')
  t.match(res.text, /unexpected text/, 'the answer says what kind of problem it is')
})

t.test('fix-admin-long-user-name: a user name `users add` accepts can be listed and revoked through the admin API', async (t) => {
  // the admin router kept Fastify's default maxParamLength (100): names of 101–128 characters got 414
  const store = await openStore({ dataDir: 'memory://' })
  const names = ['a'.repeat(100), 'b'.repeat(101), `c${'.'.repeat(60)}@${'d'.repeat(66)}`]
  for (const name of names) await usersAdd(store, { name, password: 'pw-long-name', scopes: [] })
  const key = makeKey('EdDSA')
  const gw = await start(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], { admin: { token: ADMIN_TOKEN } }), { store })
  for (const name of names) {
    t.equal((await admin(`${gw.adminUrl}/admin/users/${encodeURIComponent(name)}/sessions`, 'GET')).status, 200, `${name.length} characters: sessions listed`)
    t.equal((await admin(`${gw.adminUrl}/admin/users/${encodeURIComponent(name)}/revoke`, 'POST')).status, 200, `${name.length} characters: revoked`)
  }
  const tooLong = await admin(`${gw.adminUrl}/admin/users/${'n'.repeat(201)}/sessions`, 'GET')
  t.equal(tooLong.status, 400, 'a name longer than any the store holds is a 400')
  t.equal(tooLong.json?.code, 'bad_request', 'with its code')
})

t.test('fix-admin-api-input-500: identifiers the store cannot hold are 400s, never 500s', async (t) => {
  const store = await openStore({ dataDir: 'memory://' })
  await usersAdd(store, { name: 'alice', password: 'pw-alice', scopes: [] })
  const key = makeKey('EdDSA')
  const gw = await start(t, baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], { admin: { token: ADMIN_TOKEN } }), { store })
  const cases: Array<[string, string, unknown]> = [
    ['GET', '/admin/users/a%00b/sessions', undefined],
    ['POST', '/admin/users/a%00b/revoke', undefined],
    ['DELETE', '/admin/sessions/a%00b', undefined],
    ['DELETE', '/admin/sessions/a%0Ab', undefined],
    ['POST', '/admin/revocations/jti', { jti: 'a\u0000b', exp: 2_000_000_000 }],
    ['POST', '/admin/revocations/jti', { jti: 'x', exp: 253_402_300_800 }],
    ['POST', '/admin/revocations/jti', { jti: 'x', exp: 1e300 }],
    ['POST', '/admin/revocations/jti', { jti: 'x', exp: 2 ** 53 }],
  ]
  for (const [method, path, body] of cases) {
    const res = await admin(`${gw.adminUrl}${path}`, method, body)
    t.equal(res.status, 400, `${method} ${path} ${JSON.stringify(body) ?? ''}: 400`)
  }
  t.equal((await admin(`${gw.adminUrl}/admin/users/alice/sessions`, 'GET')).status, 200, 'a real user still lists')
  t.equal((await admin(`${gw.adminUrl}/admin/revocations/jti`, 'POST', { jti: 'j-1', exp: Math.floor(Date.now() / 1000) + 600 })).status, 204, 'a real revocation still works')
})

t.test('fix-metrics-status-label: statuses a client can choose do not make series', async (t) => {
  const upstream = await startUpstream((req, res) => { res.statusCode = Number(req.url.split('/').pop()); res.end() })
  t.teardown(() => upstream.close())
  const key = makeKey('EdDSA')
  const gw = await start(t, baseConfig(key, [{ name: 'echo', prefix: '/status', upstream: upstream.url, auth: 'public' }], { admin: { token: ADMIN_TOKEN } }))
  for (const code of [200, 418, 299, 391, 512, 599, 777, 991]) await raw(gw.url, `/status/${code}`)
  const text = await (await fetch(`${gw.adminUrl}/metrics`)).text()
  const statuses = [...text.matchAll(/^portcullis_requests_total\{[^}]*route="echo"[^}]*status="([^"]+)"/gm)].map(m => m[1])
  t.same([...new Set(statuses)].sort(), ['200', '418', 'other'], 'registered codes by number, the rest as other')
})
