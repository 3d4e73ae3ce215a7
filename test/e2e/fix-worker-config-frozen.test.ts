import t from 'tap'
import { fork } from 'node:child_process'
import { resolve } from 'node:path'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { baseConfig, makeKey } from '../fixtures/gateway.js'

// fix-worker-config-frozen: the loader freezes a configuration deeply, but a worker's copy
// arrives from the primary as a structured clone, which is not frozen — a worker ran on a
// configuration any code could change. configFromPrimary freezes it like the loader does.
// A real child process with an IPC channel stands in for the cluster worker (the same
// `process.send` / `message` path, the same 'advanced' serialization).

t.test('a worker runs on a frozen configuration, as the primary does', async (t) => {
  const key = makeKey('EdDSA')
  const config = loadConfigText(stringify(baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }])), { env: {} })
  t.ok(Object.isFrozen(config.routes[0]), 'the loader froze it (the primary side)')

  const child = fork(resolve(import.meta.dirname, '..', 'fixtures', 'worker-config-child.ts'), [], { execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const report = await new Promise<{ unfrozen: string[], writeThrew: boolean, upstream: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('the child did not report within 20 s')), 20_000)
    child.on('message', (m: { type?: string }) => {
      if (m?.type === 'config?') { child.send({ type: 'config', config }); return }
      clearTimeout(timer)
      resolve(m as never)
    })
    child.on('exit', code => { if (code !== 0) { clearTimeout(timer); reject(new Error(`the child exited with ${String(code)}`)) } })
  })
  t.same(report.unfrozen, [], 'every object of the worker\'s copy is frozen')
  t.equal(report.writeThrew, true, 'a write to it throws (ES modules are strict)')
  t.equal(report.upstream, 'http://127.0.0.1:9', 'and changes nothing')
})
