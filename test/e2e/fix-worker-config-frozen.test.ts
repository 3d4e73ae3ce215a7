import t from 'tap'
import { fork } from 'node:child_process'
import { resolve } from 'node:path'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { baseConfig, makeKey } from '../fixtures/gateway.js'

// fix-worker-config-frozen: the loader freezes a configuration deeply, but a worker's copy
// arrives from the primary as a structured clone, which is not frozen — a worker ran on a
// configuration any code could change. configFromPrimary (the start) and serveAsWorker (a
// reload) freeze it like the loader does. A real child process with an IPC channel stands
// in for the cluster worker (the same `process.send` / `message` path, the same 'advanced'
// serialization) and runs a real gateway on what it receives.

interface Report { type: 'report', unfrozen: string[], writeThrew: boolean, upstream: string, before: string }
type FromChild = Report | { type: 'config?' | 'listening' } | { type: 'reloaded', result: { ok: boolean, problems: unknown[] } }

t.test('a worker runs on a frozen configuration, at the start and after a reload', async (t) => {
  const key = makeKey('EdDSA')
  const load = (upstream: string): ReturnType<typeof loadConfigText> =>
    loadConfigText(stringify(baseConfig(key, [{ name: 'orders', prefix: '/api', upstream, auth: 'required' }])), { env: {} })
  const config = load('http://127.0.0.1:9')
  const next = load('http://127.0.0.1:10')
  t.ok(Object.isFrozen(config.routes[0]), 'the loader froze it (the primary side)')

  const child = fork(resolve(import.meta.dirname, '..', 'fixtures', 'worker-config-child.ts'), [], { execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  const messages: FromChild[] = []
  let wake: (() => void) | undefined
  child.on('message', (m: FromChild) => {
    if (m.type === 'config?') child.send({ type: 'config', config })
    messages.push(m)
    wake?.()
  })
  child.on('exit', () => wake?.())
  const receive = async <T extends FromChild['type']>(type: T): Promise<Extract<FromChild, { type: T }>> => {
    const deadline = Date.now() + 20_000
    for (;;) {
      const i = messages.findIndex(m => m.type === type)
      if (i >= 0) return messages.splice(i, 1)[0] as Extract<FromChild, { type: T }>
      if (child.exitCode !== null) throw new Error(`the child exited with ${String(child.exitCode)}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${type} from the child within 20 s`)
      await new Promise<void>(resolve => { const timer = setTimeout(resolve, left); wake = () => { clearTimeout(timer); resolve() } })
    }
  }

  const start = await receive('report')
  t.same(start.unfrozen, [], 'at the start: every object of the worker\'s copy is frozen')
  t.equal(start.writeThrew, true, 'a write to it throws (ES modules are strict)')
  t.equal(start.upstream, 'http://127.0.0.1:9', 'and changes nothing')

  await receive('listening')
  child.send({ type: 'reload', id: 1, config: next })
  const reloaded = await receive('reloaded')
  t.equal(reloaded.result.ok, true, 'the worker\'s gateway took the reload')
  child.send({ type: 'report?' })
  const after = await receive('report')
  t.equal(after.before, 'http://127.0.0.1:10', 'the configuration in force is the reloaded one')
  t.same(after.unfrozen, [], 'after a reload: every object of the configuration in force is frozen')
  t.equal(after.writeThrew, true, 'a write to it throws')
  t.equal(after.upstream, 'http://127.0.0.1:10', 'and changes nothing')
  child.send({ type: 'exit' })
})
