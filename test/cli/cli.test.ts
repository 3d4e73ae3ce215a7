import t from 'tap'
import { execFile } from 'node:child_process'
import { readFileSync, statSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { stringify } from 'yaml'
import { makeKey } from '../fixtures/keys.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// The CLI as an operator runs it: a child process, its exit code, stdout and stderr.

const ROOT = resolve(import.meta.dirname, '..', '..')

interface Run { code: number | null, signal: string | null, stdout: string, stderr: string }

function cli (...args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string, signal?: string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, signal: e?.signal ?? null, stdout, stderr })
    })
  })
}

function config (keyEntry: Record<string, unknown>): Record<string, unknown> {
  return {
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [keyEntry] },
    routes: [
      { name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:4001', rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': { anyOf: ['orders:write', 'admin'] } } },
      { name: 'catalog', prefix: '/api/catalog', upstream: 'http://127.0.0.1:4002', methods: ['GET', 'HEAD'], auth: 'optional' },
    ],
  }
}

t.test('check: a good file exits 0 and prints the route table', async (t) => {
  const key = makeKey('EdDSA')
  const dir = t.testdir({ 'good.yaml': stringify(config({ kid: 'k1', privateKey: key.privatePem })) })
  const run = await cli('check', '-c', join(dir, 'good.yaml'))
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`)
  t.match(run.stdout, /good\.yaml: ok \(2 routes, EdDSA, 1 keys\)/, 'summary line')
  const lines = run.stdout.split('\n')
  const header = lines.findIndex(l => /^ROUTE\s+PREFIX\s+UPSTREAM\s+AUTH\s+METHODS\s+SCOPES$/.test(l))
  t.ok(header >= 0, 'table header')
  t.match(lines[header + 1], /^orders\s+\/api\/orders\s+http:\/\/127\.0\.0\.1:4001\/orders\s+required\s+\*\s+GET: orders:read; \*: anyOf\(orders:write admin\)$/, 'orders row: upstream with rewritten prefix, scopes per method')
  t.match(lines[header + 2], /^catalog\s+\/api\/catalog\s+http:\/\/127\.0\.0\.1:4002\/api\/catalog\s+optional\s+GET,HEAD\s+-$/, 'catalog row: prefix kept, methods listed, no scopes')
  t.equal(run.stderr, '', 'nothing on stderr')
})

t.test('check: a bad file exits 1 and lists every problem as "- /path: message (line N)"', async (t) => {
  const text = [
    'server:', //                         1
    '  port: 99999', //                   2
    '  colour: blue', //                  3
    'tokens:', //                         4
    '  issuer: https://auth.test', //     5
    '  audience: api.test', //            6
    '  algorithm: EdDSA', //              7
    '  keys:', //                         8
    '    - kid: "k 1"', //                9
    '      privateKeyFile: ./k1.pem', //  10
    'routes:', //                         11
    '  - name: a', //                     12
    '    prefix: /api', //                13
    '    upstream: http://127.0.0.1:1', // 14
    '    auth: sometimes', //             15
  ].join('\n')
  const dir = t.testdir({ 'bad.yaml': text })
  const run = await cli('check', '-c', join(dir, 'bad.yaml'))
  t.equal(run.code, 1, 'exit 1')
  t.equal(run.stdout, '', 'nothing on stdout')
  const problemLines = run.stderr.split('\n').filter(l => l.startsWith('- '))
  for (const l of problemLines) t.match(l, /^- \/[^:]*: .+ \(line \d+\)$/, `format: ${l}`)
  const byPath = problemLines.map(l => /^- (\S+): .* \(line (\d+)\)$/.exec(l)).map(m => `${m?.[1]}@${m?.[2]}`).sort()
  t.same(byPath, ['/routes/0/auth@15', '/server/colour@3', '/server/port@2', '/tokens/keys/0/kid@9', '/tokens/keys/0/privateKeyFile@10'], 'every problem (schema and semantic), with its line')
  t.match(run.stderr, /refusing to start/)

  const semantic = await cli('check', '-c', join(t.testdir({ 'x.yaml': stringify(config({ kid: 'k1', privateKeyFile: './missing.pem' })) }), 'x.yaml'))
  t.equal(semantic.code, 1, 'a semantic problem exits 1 too')
  t.match(semantic.stderr, /^- \/tokens\/keys\/0\/privateKeyFile: .*ENOENT.* \(line \d+\)$/m, 'a missing key file is named with its path and line')

  const missing = await cli('check', '-c', join(dir, 'nope.yaml'))
  t.equal(missing.code, 1, 'a missing config file exits 1')
  t.match(missing.stderr, /cannot read .*nope\.yaml: ENOENT/)

  const yamlError = await cli('check', '-c', join(t.testdir({ 'y.yaml': 'tokens: [\nroutes: {' }), 'y.yaml'))
  t.equal(yamlError.code, 1, 'a YAML syntax error exits 1')
  t.match(yamlError.stderr, /^- \/: .* \(line \d+\)$/m, 'with its line')
})

t.test('keys generate writes a usable 0600 PEM and refuses to overwrite', async (t) => {
  const dir = t.testdir({})
  const out = join(dir, 'keys')
  const run = await cli('keys', 'generate', '--alg', 'EdDSA', '--kid', 'k1', '--out', out)
  t.equal(run.code, 0, `exit 0 (stderr: ${run.stderr})`)
  const privateFile = join(out, 'k1.pem')
  const publicFile = join(out, 'k1.pub.pem')
  t.match(run.stdout, privateFile, 'names the file it wrote')
  t.equal(statSync(privateFile).mode & 0o777, 0o600, 'private key is 0600')
  t.equal(statSync(publicFile).mode & 0o777, 0o644, 'public key is 0644')
  t.equal(statSync(out).mode & 0o077, 0, 'the key directory is not readable by others')
  const pemText = readFileSync(privateFile, 'utf8')
  t.match(pemText, /^-----BEGIN PRIVATE KEY-----\n[\s\S]+-----END PRIVATE KEY-----\n$/, 'PKCS#8 PEM')
  t.match(readFileSync(publicFile, 'utf8'), /^-----BEGIN PUBLIC KEY-----/, 'SPKI PEM')

  // a config can use it
  const cfg = join(dir, 'gateway.yaml')
  writeFileSync(cfg, stringify(config({ kid: 'k1', privateKeyFile: './keys/k1.pem' })))
  const check = await cli('check', '-c', cfg)
  t.equal(check.code, 0, `the generated key passes check (stderr: ${check.stderr})`)

  // and it is never overwritten
  const again = await cli('keys', 'generate', '--alg', 'EdDSA', '--kid', 'k1', '--out', out)
  t.equal(again.code, 1, 'second run exits 1')
  t.match(again.stderr, /EEXIST/, 'because the file exists')
  t.equal(readFileSync(privateFile, 'utf8'), pemText, 'the existing key is unchanged')

  // the key type follows --alg; a mismatching config is refused
  const rs = await cli('keys', 'generate', '--alg', 'RS256', '--kid', 'r1', '--out', out)
  t.equal(rs.code, 0, 'RS256 key generated')
  writeFileSync(cfg, stringify(config({ kid: 'r1', privateKeyFile: './keys/r1.pem' })))
  const mismatch = await cli('check', '-c', cfg)
  t.equal(mismatch.code, 1, 'an RSA key in an EdDSA config is refused')
  t.match(mismatch.stderr, /^- \/tokens\/keys\/0: .*rsa/m)

  const hs = await cli('keys', 'generate', '--alg', 'HS256', '--kid', 'h1', '--out', out)
  t.equal(hs.code, 0, 'HS256 secret generated')
  t.equal(statSync(join(out, 'h1.secret')).mode & 0o777, 0o600, 'secret is 0600')
  t.ok(Buffer.byteLength(readFileSync(join(out, 'h1.secret'), 'utf8').trim()) >= 32, 'secret is at least 32 bytes')
})

t.test('usage errors exit 2', async (t) => {
  const rows: Array<[args: string[], stderr: RegExp]> = [
    [['frobnicate'], /unknown command "frobnicate"/],
    [['keys', 'generate', '--alg', 'none', '--kid', 'k', '--out', '/tmp/x-never-written'], /--alg must be one of/],
    [['keys', 'generate', '--alg', 'EdDSA'], /usage: portcullis keys generate/],
    [['keys', 'rotate', '--kid', 'k', '--out', '/tmp/x-never-written'], /usage/],
  ]
  // independent runs: in parallel, to keep the suite short on a small machine
  const runs = await Promise.all(rows.map(([args]) => cli(...args)))
  for (const [i, [args, stderr]] of rows.entries()) {
    const run = runs[i] as Run
    t.equal(run.code, 2, `${args.join(' ')}: exit 2`)
    t.match(run.stderr, stderr, `${args.join(' ')}: says why`)
  }
  const none = await cli()
  t.equal(none.code, 2, 'no command: exit 2')
  t.match(none.stdout, /usage:/, 'and prints usage')
  const help = await cli('--help')
  t.equal(help.code, 0, '--help exits 0')
})
