import t from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { promisify } from 'node:util'
import { stringify } from 'yaml'
import { baseConfig, makeKey, raw } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { startGatewayProcess } from '../fixtures/process.js'

// Issue 12, item 2: wrk through a reload that changes a route → 0 errors, and the new route
// served within a second. A real gateway process, reloaded by SIGHUP. wrk is the load
// generator the project trusts (TOOLCHAIN); .ci/run installs it, and this suite fails rather
// than skips without it when PORTCULLIS_REQUIRE_WRK=1.

const run = promisify(execFile)
const LOAD_SECONDS = 4

async function hasWrk (): Promise<boolean> {
  try { await run('wrk', ['--version']); return true } catch (err) { return (err as { stdout?: string }).stdout?.includes('wrk') ?? false }
}

t.test('reload under load: no request fails, the new route answers within a second', async (t) => {
  if (!await hasWrk()) {
    if (process.env.PORTCULLIS_REQUIRE_WRK === '1') throw new Error('PORTCULLIS_REQUIRE_WRK=1 but wrk is not installed')
    t.plan(0, 'wrk is not installed (apt-get install wrk); .ci/run installs it')
    return
  }
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const route = { name: 'catalog', prefix: '/catalog', upstream: upstream.url, rewritePrefix: '/v1', auth: 'public' }
  const config = baseConfig(key, [route], { logging: { level: 'info', decisions: false } })
  const gw = await startGatewayProcess(t, { config, key, name: 'reload-load' })

  const load = run('wrk', ['-t1', '-c8', `-d${LOAD_SECONDS}s`, `${gw.url}/catalog/item`], { timeout: (LOAD_SECONDS + 10) * 1000 })
  await new Promise(resolve => setTimeout(resolve, 1000))
  // the route changes (another rewritePrefix) and a route appears
  writeFileSync(gw.configFile, stringify({
    ...config,
    server: { ...config.server, port: gw.port },
    admin: { ...config.admin, port: gw.adminPort },
    routes: [{ ...route, rewritePrefix: '/v2' }, { name: 'orders', prefix: '/orders', upstream: upstream.url, auth: 'public' }],
  }))
  const signalledAt = Date.now()
  process.kill(gw.pid, 'SIGHUP')
  let servedAt: number | undefined
  while (Date.now() - signalledAt < 3000) {
    if ((await raw(gw.url, '/orders/1')).status === 200) { servedAt = Date.now(); break }
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  const { stdout } = await load
  t.ok(servedAt !== undefined && servedAt - signalledAt <= 1000, `the new route was served ${servedAt === undefined ? 'never' : `${servedAt - signalledAt} ms`} after SIGHUP`)
  const requests = Number(/([0-9]+) requests in/.exec(stdout)?.[1] ?? 0)
  t.ok(requests > 100, `wrk sent ${requests} requests`)
  t.notMatch(stdout, /Non-2xx or 3xx responses/, 'no request got an error status')
  t.notMatch(stdout, /Socket errors/, 'no connection failed or was dropped')
  const paths = new Set(upstream.requests.map(r => r.url.split('/')[1]))
  t.ok(paths.has('v1') && paths.has('v2'), 'the load was served by the old route, then by the changed one')
  t.match(gw.output(), /"event":"config_reloaded"/, 'the reload is a security event line of its own')
})
