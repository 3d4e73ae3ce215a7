/* eslint-disable no-template-curly-in-string -- ${VAR} placeholders are the subject of these tests */
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import type { GatewayConfig } from '../../src/config/types.js'
import { ConfigError, type ConfigProblem } from '../../src/errors.js'
import { buildKeySet, generateKey } from '../../src/tokens/keys.js'
import { makeKey } from '../fixtures/keys.js'

// Regression test for the reviewer's t07: `secret: /etc/portcullis/keys/k1-signing.secret` made
// the path (39 bytes) the HMAC key — anyone who reads the configuration could sign tokens —
// because `keys generate --alg HS256` writes a .secret file that no field could name. A key
// entry takes `secretFile` now, and a `secret` that names a file is refused.
// Paths and keywords, never message prose.

const ed = makeKey('EdDSA')
const secret48 = 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldC1zZWNyZXQtc2Vj'

function config (key: Record<string, unknown>, algorithm = 'HS256'): Record<string, any> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm, keys: [{ kid: 'k1', ...key }] },
    routes: [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:4001', auth: 'required' }],
  }
}

function load (doc: Record<string, any>, baseDir: string, env: Record<string, string> = {}): { config?: GatewayConfig, problems: ConfigProblem[], text: string } {
  try {
    return { config: loadConfigText(stringify(doc), { env, baseDir }), problems: [], text: '' }
  } catch (err) {
    if (err instanceof ConfigError) return { problems: [...err.problems], text: err.message }
    throw err
  }
}

t.test('secretFile: the file `keys generate --alg HS256` writes signs and verifies', async (t) => {
  const dir = t.testdir({ keys: {} })
  const written = generateKey('HS256', 'k1', join(dir, 'keys'))
  const loaded = load(config({ secretFile: './keys/k1.secret' }), dir)
  t.same(loaded.problems, [], 'loads')
  const onDisk = readFileSync(written.privateFile, 'utf8')
  t.equal(loaded.config?.tokens.keys[0]?.secret, onDisk.slice(0, -1), 'the secret is the file without its trailing newline')
  const keySet = buildKeySet('HS256', loaded.config?.tokens.keys ?? [])
  t.equal(keySet.signing.key, onDisk.slice(0, -1), 'and it is the signing key')
})

t.test('secretFile and secret: one table', async (t) => {
  const dir = t.testdir({
    'ok.secret': 'x'.repeat(32) + '\n',
    'two-newlines.secret': 'y'.repeat(32) + '\n\n',
    'crlf.secret': 'z'.repeat(32) + '\r\n',
    'short.secret': 'x'.repeat(31) + '\n',
    'pub.pem': ed.publicPem,
    'binary.secret': Buffer.from([0xff, 0xfe, 0xfd, ...Buffer.alloc(40, 0x80)]),
    'big.secret': 'x'.repeat(70 * 1024),
    'k1-signing.secret': secret48,
    'portcullis-hs256-signing-key-one.secret': secret48,
    'dir.secret': {},
  })
  const rows: Array<{ name: string, key: Record<string, unknown>, alg?: string, env?: Record<string, string>, paths: string[], match?: RegExp, secret?: string, hidden?: string[] }> = [
    { name: 'a secret file of 32 bytes and a newline', key: { secretFile: './ok.secret' }, paths: [], secret: 'x'.repeat(32) },
    { name: 'only one trailing newline is stripped', key: { secretFile: './two-newlines.secret' }, paths: [], secret: 'y'.repeat(32) + '\n' },
    { name: 'a CRLF line end is stripped', key: { secretFile: './crlf.secret' }, paths: [], secret: 'z'.repeat(32) },
    { name: 'an absolute secretFile', key: { secretFile: join(dir, 'ok.secret') }, paths: [], secret: 'x'.repeat(32) },
    { name: 'a secret file of 31 bytes', key: { secretFile: './short.secret' }, paths: ['/tokens/keys/0/secretFile'], match: /32 bytes/ },
    { name: 'a secret file that does not exist', key: { secretFile: './nope.secret' }, paths: ['/tokens/keys/0/secretFile'], match: /ENOENT/ },
    { name: 'a directory', key: { secretFile: './dir.secret' }, paths: ['/tokens/keys/0/secretFile'], match: /regular file/ },
    { name: 'a secret file over 64 KiB', key: { secretFile: './big.secret' }, paths: ['/tokens/keys/0/secretFile'], match: /64 KiB/ },
    { name: 'a secret file that is not text', key: { secretFile: './binary.secret' }, paths: ['/tokens/keys/0/secretFile'], match: /text/ },
    { name: 'a public key as the secret file (RFC 8725 §2.1)', key: { secretFile: './pub.pem' }, paths: ['/tokens/keys/0/secretFile'], match: /PEM/ },
    { name: 'secretFile: ${SECRET} holding the secret itself', key: { secretFile: '${HS_SECRET}' }, env: { HS_SECRET: secret48 }, paths: ['/tokens/keys/0/secretFile'], hidden: [secret48] },
    { name: 'secret and secretFile both', key: { secret: secret48, secretFile: './ok.secret' }, paths: ['/tokens/keys/0'] },
    { name: 'secretFile with a private key file', key: { secretFile: './ok.secret', privateKeyFile: './k1.pem' }, paths: ['/tokens/keys/0'] },
    { name: 'secretFile on an EdDSA key', key: { privateKey: ed.privatePem, secretFile: './ok.secret' }, alg: 'EdDSA', paths: ['/tokens/keys/0/secretFile'], match: /key pairs/ },
    { name: 'neither secret nor secretFile', key: {}, paths: ['/tokens/keys/0/secret'] },
    { name: 'an inline secret of 48 characters', key: { secret: secret48 }, paths: [], secret: secret48 },
    { name: 'secret: an absolute path to an existing file (t07)', key: { secret: join(dir, 'k1-signing.secret') }, paths: ['/tokens/keys/0/secret'], match: /secretFile/, hidden: [dir] },
    { name: 'secret: a path relative to the configuration', key: { secret: 'portcullis-hs256-signing-key-one.secret' }, paths: ['/tokens/keys/0/secret'], match: /secretFile/ },
    { name: 'secret: a path to a file that is not here (check runs elsewhere)', key: { secret: '/etc/portcullis/keys/k1-signing.secret' }, paths: ['/tokens/keys/0/secret'], match: /secretFile/ },
    { name: 'secret: ./ and a file name', key: { secret: './keys/production-signing-key.secret' }, paths: ['/tokens/keys/0/secret'], match: /secretFile/ },
    { name: 'secret: a PEM', key: { secret: ed.publicPem }, paths: ['/tokens/keys/0/secret'], match: /PEM/ },
  ]
  for (const row of rows) {
    const { config: c, problems, text } = load(config(row.key, row.alg), dir, row.env)
    t.same(problems.map(p => p.path).sort(), row.paths, row.name)
    if (row.match !== undefined) t.match(problems.find(p => p.path === row.paths[0])?.message, row.match, `${row.name}: ${String(row.match)}`)
    if (row.secret !== undefined) t.equal(c?.tokens.keys[0]?.secret, row.secret, `${row.name}: the secret`)
    for (const h of row.hidden ?? []) t.notOk(text.includes(h), `${row.name}: the value is not in the error`)
  }
})
