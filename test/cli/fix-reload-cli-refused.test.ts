import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { createServer } from 'node:http'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { pino } from 'pino'
import { loadConfigFile } from '../../src/config/load.js'
import { buildGateway } from '../../src/app.js'
import { listen } from '../../src/server.js'
import { baseConfig, makeKey } from '../fixtures/gateway.js'
import { freePort, ROOT } from '../fixtures/process.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// `portcullis reload -c FILE` asks the running gateway through POST /admin/reload with FILE's
// admin.token and admin port. When that is not the running gateway's (admin.token and
// admin.port change only with a restart), it read the 401's body as a reload result and died
// with "portcullis: Cannot read properties of undefined (reading 'slice')". Every answer that is
// not a reload result, and no answer at all, is now one line on stderr and exit 1.

const RUNNING_TOKEN = 'admin-token-of-the-running-gateway-0123456789'
const OTHER_TOKEN = 'admin-token-written-in-the-file-since-0123456789'

interface Run { code: number | null, stdout: string, stderr: string }

function reloadCli (file: string): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'reload', '-c', file], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout, stderr })
    })
  })
}

/** a gateway in this process, on the admin port and token of `config`; `write` gives the file `reload -c` reads */
async function runningGateway (t: Test): Promise<{ adminPort: number, fileWith: (admin: Record<string, unknown>) => string }> {
  const key = makeKey('EdDSA')
  const dir = t.testdir({})
  const config = (admin: Record<string, unknown>): Record<string, unknown> => baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required' }], { admin })
  const running = join(dir, 'running.yaml')
  writeFileSync(running, stringify(config({ token: RUNNING_TOKEN })))
  const load = (): ReturnType<typeof loadConfigFile> => loadConfigFile(running, { env: {} })
  const gateway = await buildGateway(load(), { logger: pino({ level: 'silent' }), loadConfig: load })
  const l = await listen(gateway, { handleSignals: false })
  t.teardown(() => l.shutdown())
  let n = 0
  return {
    adminPort: l.adminPort,
    fileWith: (admin) => {
      const file = join(dir, `reload-${++n}.yaml`)
      writeFileSync(file, stringify(config({ host: '127.0.0.1', ...admin })))
      return file
    },
  }
}

/** one line on stderr, nothing on stdout, exit 1, and never the crash */
function refusedInOneLine (t: Test, run: Run, pattern: RegExp): void {
  t.equal(run.code, 1, 'exit 1')
  t.equal(run.stdout, '', 'nothing on stdout')
  t.notMatch(run.stderr, /Cannot read properties|TypeError|at .*\.ts:\d+/, 'no crash, no stack')
  t.equal(run.stderr.trimEnd().split('\n').length, 1, `one line: ${run.stderr.trimEnd()}`)
  t.match(run.stderr, pattern)
}

t.test('fix-reload-cli-refused: a file whose admin.token is not the running gateway\'s gets one line and exit 1', async (t) => {
  const gw = await runningGateway(t)
  const run = await reloadCli(gw.fileWith({ port: gw.adminPort, token: OTHER_TOKEN }))
  refusedInOneLine(t, run, /the admin API refused the token \(401\).*admin\.token changes only with a restart/)
  // the same gateway with the running token reloads, so the refusal above was the token's
  const ok = await reloadCli(gw.fileWith({ port: gw.adminPort, token: RUNNING_TOKEN }))
  t.equal(ok.code, 0, `the running token reloads (stderr: ${ok.stderr})`)
  t.match(ok.stdout, /^reloaded: configuration [0-9a-f]{12} in force\n$/)
})

t.test('fix-reload-cli-refused: nothing listening on the file\'s admin port gets one line and exit 1', async (t) => {
  const closed = await freePort()
  const run = await reloadCli(join(t.testdir({ 'gateway.yaml': stringify(baseConfig(makeKey('EdDSA'), [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required' }], { admin: { host: '127.0.0.1', port: closed, token: RUNNING_TOKEN } })) }), 'gateway.yaml'))
  refusedInOneLine(t, run, new RegExp(`no answer from the admin API at http://127\\.0\\.0\\.1:${closed}/admin/reload \\(ECONNREFUSED\\).*admin\\.port`))
})

t.test('fix-reload-cli-refused: something else answering on the admin port gets one line and exit 1', async (t) => {
  // not the admin API: a 404 with an HTML page, then a 500 with a JSON error and no result
  const answers = [
    { status: 404, type: 'text/html', body: '<html>not here</html>', expect: /answered 404, not a reload result/ },
    { status: 500, type: 'application/json', body: JSON.stringify({ statusCode: 500, code: 'internal_error', message: 'boom' }), expect: /answered 500 internal_error, not a reload result/ },
    { status: 200, type: 'application/json', body: '{"ok":true}', expect: /answered 200, not a reload result/ },
  ]
  let next = 0
  const server = createServer((_req, res) => {
    const a = answers[next]!
    res.writeHead(a.status, { 'content-type': a.type }).end(a.body)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  const port = (server.address() as { port: number }).port
  const file = join(t.testdir({ 'gateway.yaml': stringify(baseConfig(makeKey('EdDSA'), [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required' }], { admin: { host: '127.0.0.1', port, token: RUNNING_TOKEN } })) }), 'gateway.yaml')
  for (; next < answers.length; next++) {
    refusedInOneLine(t, await reloadCli(file), answers[next]!.expect)
  }
})
