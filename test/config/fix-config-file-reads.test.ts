/* eslint-disable no-template-curly-in-string -- ${VAR} placeholders are the subject of these tests */
import t from 'tap'
import { execFileSync, spawn } from 'node:child_process'
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { stringify } from 'yaml'
import { loadConfigFile, loadConfigText } from '../../src/config/load.js'
import { ConfigError, type ConfigProblem } from '../../src/errors.js'
import { makeKey } from '../fixtures/keys.js'
import { ROOT } from '../fixtures/process.js'
import { testCertificate } from '../fixtures/tls.js'

// Regression tests for the reviewer's findings on the files a configuration names (t05, t06,
// t09, t10, t11 and the YAML tags of t01):
// - a value that is no file name (a PEM in privateKeyFile: "${SIGNING_KEY}") was printed in the
//   problem, and so in `check`, explain, start, the reload's 422 answer and the log;
// - a FIFO hung the load (and, on reload, the running gateway's event loop), a symlink to
//   /dev/zero was read until memory ran out, a file of any size was read whole;
// - database.url was never validated (and its problems must not quote it: it holds a password);
// - an unknown YAML tag was a warning, and the value loaded as if untagged.
// Paths and keywords, never message prose.

const ed = makeKey('EdDSA')
const pemBody = ed.privatePem.split('\n')[1] as string
/** a single-line secret as an environment variable would hold it */
const envSecret = 'Zq3xP0c9Lk2vTn8RwB4sYh6Jm1uEa7Gd5FoNiKbQ'

function minimal (): Record<string, any> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: ed.privatePem }] },
    routes: [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:4001', auth: 'required' }],
  }
}

/** the problems and the whole error text (what check, start, the log and a reload's answer print) */
function loadProblems (load: () => unknown): { problems: ConfigProblem[], text: string } {
  try {
    load()
    return { problems: [], text: '' }
  } catch (err) {
    if (err instanceof ConfigError) return { problems: [...err.problems], text: err.message }
    throw err
  }
}

const fromText = (doc: Record<string, any> | string, env: Record<string, string> = {}, baseDir = '/srv/gw') =>
  loadProblems(() => loadConfigText(typeof doc === 'string' ? doc : stringify(doc), { env, baseDir }))
const paths = (problems: ConfigProblem[]): string[] => problems.map(p => p.path).sort()

t.test('a value that is no file name is never quoted in a problem', async (t) => {
  const dir = t.testdir({ 'ca.pem': 'x' })
  const cert = testCertificate(t)
  const tls = (files: Record<string, string>): Record<string, string> => ({ certFile: cert.certFile, keyFile: cert.keyFile, ...files })
  const rows: Array<{ name: string, edit: (c: Record<string, any>) => void, env?: Record<string, string>, paths: string[], secret: string[] }> = [
    {
      name: 'privateKeyFile: "${SIGNING_KEY}" holding a PEM (t06)',
      edit: c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: '${SIGNING_KEY}' }] },
      env: { SIGNING_KEY: ed.privatePem },
      paths: ['/tokens/keys/0/privateKeyFile'],
      secret: ['BEGIN', pemBody],
    },
    {
      name: 'privateKeyFile: one line of a PEM (t10 pem-literal)',
      edit: c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: pemBody }] },
      paths: ['/tokens/keys/0/privateKeyFile'],
      secret: [pemBody],
    },
    {
      name: 'publicKeyFile: a PEM',
      edit: c => { c.tokens.keys.push({ kid: 'k2', publicKeyFile: ed.publicPem }) },
      paths: ['/tokens/keys/1/publicKeyFile'],
      secret: ['BEGIN', ed.publicPem.split('\n')[1] as string],
    },
    {
      name: 'privateKeyFile: a one-line secret from the environment',
      edit: c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: '${K}' }] },
      env: { K: envSecret },
      paths: ['/tokens/keys/0/privateKeyFile'],
      secret: [envSecret],
    },
    {
      name: 'privateKeyFile: control characters',
      edit: c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: 'abc\u0007def\u001bghi' }] },
      paths: ['/tokens/keys/0/privateKeyFile'],
      secret: ['abc\u0007def'],
    },
    {
      name: 'server.tls: key, certificate and CA given as PEM text',
      edit: c => { c.server = { tls: tls({ certFile: cert.certPem, keyFile: ed.privatePem, caFile: cert.certPem }) } },
      paths: ['/server/tls/caFile', '/server/tls/certFile', '/server/tls/keyFile'],
      secret: ['BEGIN', pemBody, cert.certPem.split('\n')[1] as string],
    },
    {
      name: 'server.tls.caFile: a path that does not exist is named (the rule keeps real paths)',
      edit: c => { c.server = { tls: tls({ caFile: './missing-ca.pem' }) } },
      paths: ['/server/tls/caFile'],
      secret: [],
    },
  ]
  for (const row of rows) {
    const c = minimal()
    row.edit(c)
    const { problems, text } = fromText(c, row.env, dir)
    t.same(paths(problems), row.paths, `${row.name}: paths`)
    for (const s of row.secret) t.notOk(text.includes(s), `${row.name}: the value is not in the error`)
  }
  const missing = fromText({ ...minimal(), server: { tls: tls({ caFile: './missing-ca.pem' }) } }, {}, dir)
  t.match(missing.problems[0]?.message, /missing-ca\.pem.*ENOENT/, 'a real path is still named with its errno code')
})

t.test('the configuration file itself: a PEM given as its name is not quoted', async (t) => {
  const { problems, text } = loadProblems(() => loadConfigFile(ed.privatePem, { env: {} }))
  t.same(paths(problems), [''], 'one problem')
  t.notOk(text.includes('BEGIN') || text.includes(pemBody), 'the value is not in the error')
  const nope = loadProblems(() => loadConfigFile('./nope.yaml', { env: {} }))
  t.match(nope.problems[0]?.message, /nope\.yaml.*ENOENT/, 'a file name is named')
})

t.test('files that are not regular, or too large, are refused', async (t) => {
  const big = 'A'.repeat(200 * 1024)
  const cert = testCertificate(t)
  const chain = readFileSync(cert.certFile, 'utf8')
  const dir = t.testdir({
    'big.pem': big,
    'dir.pem': {},
    // a CA bundle of 300 KiB (a real one is ~220 KB): under the chain cap
    'bundle.pem': chain.repeat(Math.ceil(300 * 1024 / chain.length)),
    'huge-bundle.pem': chain.repeat(Math.ceil(1100 * 1024 / chain.length)),
  })
  const key = (file: string) => (c: Record<string, any>) => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: file }] }
  const tls = (files: Record<string, string>) => (c: Record<string, any>) => { c.server = { tls: { certFile: cert.certFile, keyFile: cert.keyFile, ...files } } }
  const rows: Array<{ name: string, edit: (c: Record<string, any>) => void, paths: string[], match?: RegExp }> = [
    { name: 'a 200 KiB key file (t09 huge)', edit: key('./big.pem'), paths: ['/tokens/keys/0/privateKeyFile'], match: /64 KiB/ },
    { name: 'a directory as a key file', edit: key('./dir.pem'), paths: ['/tokens/keys/0/privateKeyFile'], match: /regular file/ },
    { name: 'a 300 KiB CA bundle', edit: tls({ caFile: './bundle.pem' }), paths: [] },
    { name: 'a 1.1 MiB CA bundle', edit: tls({ caFile: './huge-bundle.pem' }), paths: ['/server/tls/caFile'], match: /1 MiB/ },
  ]
  for (const row of rows) {
    const c = minimal()
    row.edit(c)
    const { problems } = fromText(c, {}, dir)
    t.same(paths(problems), row.paths, row.name)
    if (row.match !== undefined) t.match(problems[0]?.message, row.match, `${row.name}: ${String(row.match)}`)
  }
})

t.test('the configuration file has a size cap', async (t) => {
  const config = stringify(minimal())
  const dir = t.testdir({
    // as large as the 10k-route benchmark configuration
    'ok.yaml': config + '# ' + 'x'.repeat(1_500_000) + '\n',
    'big.yaml': config + '# ' + 'x'.repeat(5 * 1024 * 1024) + '\n',
  })
  t.same(loadProblems(() => loadConfigFile(join(dir, 'ok.yaml'), { env: {} })).problems, [], '1.5 MB loads')
  const big = loadProblems(() => loadConfigFile(join(dir, 'big.yaml'), { env: {} }))
  t.same(paths(big.problems), [''], '5 MiB is refused')
  t.match(big.problems[0]?.message, /4 MiB/, 'with the cap')
})

t.test('readBoundedFile reads what the descriptor holds, never past the cap', { skip: process.platform !== 'linux' && 'needs /proc' }, async (t) => {
  const { readBoundedFile, FileReadErrorCode } = await import('../../src/config/read-file.js')
  // /proc files say size 0 and have content: read on to the end
  t.match(readBoundedFile('/proc/self/status', 64 * 1024).toString(), /^Name:/, 'a file that fstat calls empty is read to its end')
  // and a file larger than fstat said is stopped at the cap
  t.throws(() => readBoundedFile('/proc/self/maps', 64), { code: FileReadErrorCode.tooLarge }, 'a file that grows past the cap while read')
  const dir = t.testdir({ 'k.pem': 'abc' })
  t.equal(readBoundedFile(join(dir, 'k.pem'), 3).toString(), 'abc', 'exactly the cap is fine')
  t.throws(() => readBoundedFile(join(dir, 'k.pem'), 2), { code: FileReadErrorCode.tooLarge }, 'one byte over is not')
})

// A FIFO blocks the open (readFileSync) until a writer comes; /dev/zero never ends. Each is loaded
// in a child process, killed when it takes longer than CHILD_TIMEOUT_MS or grows past
// MAX_CHILD_RSS_KB, so that the code before the fix fails these rows instead of hanging the suite.
const CHILD_TIMEOUT_MS = 20_000
const MAX_CHILD_RSS_KB = 1024 * 1024

interface ChildLoad { outcome: 'done' | 'timeout' | 'memory' | 'crash', problems: ConfigProblem[], text: string }

async function loadInChild (script: string, configFile: string): Promise<ChildLoad> {
  const child = spawn(process.execPath, ['--import', 'tsx', script, configFile], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (chunk: Buffer) => { out += chunk.toString() })
  child.stderr.resume()
  let killed: 'timeout' | 'memory' | undefined
  const kill = (why: 'timeout' | 'memory'): void => { killed ??= why; child.kill('SIGKILL') }
  const timer = setTimeout(() => kill('timeout'), CHILD_TIMEOUT_MS)
  const poll = setInterval(() => {
    try {
      const rssKb = Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? 0)
      if (rssKb > MAX_CHILD_RSS_KB) kill('memory')
    } catch {} // gone, or no /proc
  }, 100)
  await new Promise(resolve => child.on('close', resolve))
  clearTimeout(timer)
  clearInterval(poll)
  if (killed !== undefined) return { outcome: killed, problems: [], text: '' }
  try {
    const result = JSON.parse(out) as { problems: ConfigProblem[], text: string }
    return { outcome: 'done', ...result }
  } catch {
    return { outcome: 'crash', problems: [], text: out }
  }
}

t.test('a FIFO or an endless device is refused at once (check, start, reload)', { skip: process.platform === 'win32' && 'no FIFOs' }, async (t) => {
  const cert = testCertificate(t)
  const dir = t.testdir({
    'load.mjs': [
      `import { loadConfigFile } from ${JSON.stringify(pathToFileURL(join(ROOT, 'src/config/load.js')).href)}`,
      'try {',
      '  loadConfigFile(process.argv[2], { env: {} })',
      "  process.stdout.write(JSON.stringify({ problems: [], text: '' }))",
      '} catch (err) {',
      '  process.stdout.write(JSON.stringify({ problems: err.problems ?? [{ path: "?", message: String(err) }], text: String(err.message) }))',
      '}',
      '',
    ].join('\n'),
  })
  execFileSync('mkfifo', [join(dir, 'fifo.pem'), join(dir, 'gateway-fifo.yaml')])
  symlinkSync('/dev/zero', join(dir, 'zero.pem'))
  const write = (name: string, edit: (c: Record<string, any>) => void): string => {
    const c = minimal()
    edit(c)
    const file = join(dir, name)
    writeFileSync(file, stringify(c))
    return file
  }
  const rows = [
    { name: 'privateKeyFile is a FIFO (t09 fifo, t10 C)', file: write('fifo-key.yaml', c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: './fifo.pem' }] }), paths: ['/tokens/keys/0/privateKeyFile'] },
    { name: 'privateKeyFile is a symlink to /dev/zero (t09 zero, t11)', file: write('zero-key.yaml', c => { c.tokens.keys = [{ kid: 'k1', privateKeyFile: './zero.pem' }] }), paths: ['/tokens/keys/0/privateKeyFile'] },
    { name: 'server.tls.certFile is a FIFO', file: write('fifo-cert.yaml', c => { c.server = { tls: { certFile: './fifo.pem', keyFile: cert.keyFile } } }), paths: ['/server/tls/certFile'] },
    { name: 'server.tls.caFile is /dev/zero', file: write('zero-ca.yaml', c => { c.server = { tls: { certFile: cert.certFile, keyFile: cert.keyFile, caFile: '/dev/zero' } } }), paths: ['/server/tls/caFile'] },
    { name: 'the configuration file is a FIFO', file: join(dir, 'gateway-fifo.yaml'), paths: [''] },
  ]
  const results = await Promise.all(rows.map(async row => await loadInChild(join(dir, 'load.mjs'), row.file)))
  rows.forEach((row, i) => {
    const r = results[i] as ChildLoad
    t.equal(r.outcome, 'done', `${row.name}: the load ends, in bounded memory`)
    t.same(paths(r.problems), row.paths, `${row.name}: paths`)
    t.match(r.problems[0]?.message ?? '', /regular file/, `${row.name}: not a regular file`)
  })
})

t.test('database.url: a postgres URL or nothing, and never quoted (t05)', async (t) => {
  const dir = t.testdir({ 'root.pem': 'x' })
  execFileSync('mkfifo', [join(dir, 'fifo.pem')])
  const rows: Array<{ name: string, url: string, listenUrl?: string, paths: string[] }> = [
    { name: 'empty: the embedded store', url: '', paths: [] },
    { name: 'postgres://', url: 'postgres://app:PW_LEAK@db.internal:5432/portcullis', paths: [] },
    { name: 'postgresql://', url: 'postgresql://app:PW_LEAK@db.internal/portcullis?sslmode=require', paths: [] },
    { name: 'a socket directory in the query', url: 'postgres:///portcullis?host=/var/run/postgresql', paths: [] },
    { name: 'mysql://', url: 'mysql://app:PW_LEAK@db.internal/portcullis', paths: ['/database/url'] },
    { name: 'not a URL', url: 'PW_LEAK not a url', paths: ['/database/url'] },
    { name: 'a port that is not a number', url: 'postgres://app:PW_LEAK@127.0.0.1:notaport/db', paths: ['/database/url'] },
    { name: 'an unclosed IPv6 bracket', url: 'postgres://app:PW_LEAK@[::1/db', paths: ['/database/url'] },
    { name: 'an sslrootcert that does not exist', url: 'postgres://app:PW_LEAK@h/db?sslrootcert=/nonexistent/PW_LEAK', paths: ['/database/url'] },
    { name: 'an sslcert that is a FIFO', url: `postgres://app:PW_LEAK@h/db?sslcert=${join(dir, 'fifo.pem')}`, paths: ['/database/url'] },
    { name: 'an sslrootcert that exists', url: `postgres://app:PW_LEAK@h/db?sslrootcert=${join(dir, 'root.pem')}`, paths: [] },
    { name: 'listenUrl: http://', url: 'postgres://app:PW_LEAK@h/db', listenUrl: 'http://app:PW_LEAK@h/db', paths: ['/database/listenUrl'] },
  ]
  for (const row of rows) {
    const { problems, text } = fromText({ ...minimal(), database: { url: row.url, listenUrl: row.listenUrl ?? '' } })
    t.same(paths(problems), row.paths, row.name)
    t.notOk(text.includes('PW_LEAK'), `${row.name}: the URL is not in the error`)
  }
})

t.test('an unknown YAML tag is a problem, named by its line, never by its text', async (t) => {
  const base = stringify(minimal())
  const rows = [
    { name: 'a custom tag on the admin token (y-tag-custom)', text: base + 'admin: { token: !secret SUPERSECRET_LEAK_abcdefghijklmnopqrstuvwxyz }\n' },
    { name: 'a verbatim tag', text: base + 'admin: { token: !<tag:x> SUPERSECRET_LEAK_abcdefghijklmnopqrstuvwxyz }\n' },
    { name: 'a !!seq tag on a mapping', text: base + 'admin: !!seq { token: SUPERSECRET_LEAK_abcdefghijklmnopqrstuvwxyz }\n' },
    { name: 'an unknown directive', text: '%SUPERSECRET_LEAK x\n---\n' + base },
  ]
  for (const row of rows) {
    const { problems, text } = fromText(row.text)
    t.same(paths(problems), [''], `${row.name}: refused`)
    t.ok(problems.every(p => typeof p.line === 'number'), `${row.name}: with a line`)
    t.notOk(text.includes('SUPERSECRET_LEAK'), `${row.name}: the text is not in the error`)
  }
})
