import t, { type Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { request as httpRequest } from 'node:http'
import { request as httpsRequest } from 'node:https'
import { createServer, type AddressInfo } from 'node:net'
import { join, resolve } from 'node:path'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { stringify } from 'yaml'
import { createPublicKey } from 'node:crypto'
import { startUpstream, type RecordingUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, PUBLIC_SCHEME, signWith } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { tryConnect } from '../fixtures/raw-client.js'

// The real process, as an orchestrator runs it: `portcullis start`, then SIGTERM with
// requests in flight. Timing here is the subject (drain, shutdown timeout), so it is real time.

const ROOT = resolve(import.meta.dirname, '..', '..')
const READY_TIMEOUT_MS = 90_000

/**
 * The store the spawned gateways use: a throwaway PostgreSQL when the binaries exist (about
 * a second to start), else the embedded store (PGlite: its first create takes several
 * seconds and much more under load, hence the generous readiness timeout).
 */
let databaseUrl: string | undefined
t.before(async () => {
  if (pgAvailability().available) databaseUrl = (await startPostgres(t)).url
})

async function freePort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as AddressInfo).port
  await new Promise<void>(resolve => srv.close(() => resolve()))
  return port
}

interface Gw {
  child: ChildProcess
  port: number
  adminPort: number
  output: () => string
  /** resolves with the exit code and how long after `since` it came */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null, at: number }>
}

/**
 * Writes a config, spawns `portcullis start`, waits until it is ready. Ports are picked by
 * listening on 0 and closing, which can race with other test files doing the same: a child
 * that dies with EADDRINUSE is retried on new ports, and readiness is only believed when the
 * public port serves OUR key in its JWKS (not another file's gateway that took the port).
 */
async function startProcess (t: Test, key: TestKey, upstream: RecordingUpstream, shutdownTimeout: string): Promise<Gw> {
  let lastError: Error | undefined
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      return await startOnce(t, key, upstream, shutdownTimeout)
    } catch (err) {
      lastError = err as Error
      if (!/EADDRINUSE/.test(lastError.message)) throw err
    }
  }
  throw lastError
}

async function startOnce (t: Test, key: TestKey, upstream: RecordingUpstream, shutdownTimeout: string): Promise<Gw> {
  const port = await freePort()
  const adminPort = await freePort()
  // mkdtemp, not t.testdir: one directory per attempt, unique even if this file runs twice at once
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-shutdown-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const config = baseConfig(key, [{ name: 'slow', prefix: '/slow', upstream: upstream.url, auth: 'required' }], {
    server: { port, shutdownTimeout },
    admin: { port: adminPort },
    logging: { level: 'warn' },
  })
  config.database = databaseUrl === undefined ? { dataDir: join(dir, 'data') } : { url: databaseUrl }
  const file = join(dir, 'gateway.yaml')
  writeFileSync(file, stringify(config))
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli.ts', 'start', '-c', file], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, NODE_OPTIONS: '' } })
  let out = ''
  child.stdout?.on('data', (c: Buffer) => { out += c.toString() })
  child.stderr?.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null, at: number }>(resolve => {
    child.once('exit', (code, signal) => resolve({ code, signal, at: Date.now() }))
  })
  t.teardown(async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL')
      await exited
    }
  })
  const ourPublicX = String(createPublicKey(key.publicPem).export({ format: 'jwk' }).x)
  const deadline = Date.now() + READY_TIMEOUT_MS
  let alive = true
  let lastProbe = ''
  exited.then(() => { alive = false }, () => {})
  while (true) {
    if (!alive) throw new Error(`the gateway exited before it was ready:\n${out}`)
    if (Date.now() > deadline) throw new Error(`the gateway was not ready within ${READY_TIMEOUT_MS} ms (last probe: ${lastProbe}):\n${out}`)
    const health = await get(`http://127.0.0.1:${adminPort}/healthz`).then(r => String(r.status), (err: NodeJS.ErrnoException) => err.code ?? err.message)
    const jwks = health === '200' ? await get(`${PUBLIC_SCHEME}://127.0.0.1:${port}/.well-known/jwks.json`).then(r => r.body, (err: NodeJS.ErrnoException) => err.code ?? err.message) : ''
    lastProbe = `healthz ${health}, jwks ${jwks.slice(0, 80)}`
    if (health === '200' && jwks.includes(ourPublicX)) break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return { child, port, adminPort, output: () => out, exited }
}

interface Result { status: number, body: string }

function get (url: string, headers: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve, reject) => {
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, { headers, agent: false }, (res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end()
  })
}

/** an upstream that answers every request after `delayMs`; its timers are cleared at teardown */
async function slowUpstream (t: Test, delayMs: number): Promise<RecordingUpstream> {
  const timers = new Set<NodeJS.Timeout>()
  const upstream = await startUpstream((rec, res) => {
    const timer = setTimeout(() => {
      timers.delete(timer)
      if (!res.destroyed) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ done: rec.url }))
    }, delayMs)
    timers.add(timer)
  })
  t.teardown(async () => {
    for (const timer of timers) clearTimeout(timer)
    await upstream.close()
  })
  return upstream
}

async function waitFor (what: string, predicate: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

t.test('SIGTERM drains in-flight requests, refuses new connections, exits 0', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await slowUpstream(t, 500)
  const gw = await startProcess(t, key, upstream, '10s')
  const auth = { authorization: `Bearer ${signWith(key, goodClaims())}` }

  const warm = await get(`${PUBLIC_SCHEME}://127.0.0.1:${gw.port}/slow/warm`, auth)
  t.equal(warm.status, 200, 'the gateway proxies before shutdown')

  const IN_FLIGHT = 5
  const inFlight = Array.from({ length: IN_FLIGHT }, (_, i) => get(`${PUBLIC_SCHEME}://127.0.0.1:${gw.port}/slow/${i}`, auth).then(r => r, (err: Error) => ({ status: -1, body: err.message })))
  await waitFor('every request to reach the upstream', () => upstream.requests.length === IN_FLIGHT + 1)
  const sigtermAt = Date.now()
  gw.child.kill('SIGTERM')

  // new connections are refused while the old ones drain
  let refusedAt = 0
  const poll = async (): Promise<void> => {
    while (refusedAt === 0 && Date.now() - sigtermAt < 5000) {
      if (await tryConnect(gw.port) === 'ECONNREFUSED') refusedAt = Date.now()
      else await new Promise(resolve => setTimeout(resolve, 10))
    }
  }
  await poll()
  t.ok(refusedAt > 0, 'a new connection is refused after SIGTERM')

  const results = await Promise.all(inFlight)
  const doneAt = Date.now()
  t.ok(refusedAt < doneAt, `new connections were refused while requests were still in flight (${refusedAt - sigtermAt} ms after SIGTERM)`)
  for (const [i, r] of results.entries()) {
    t.equal(r.status, 200, `in-flight request ${i} completed with 200`)
    t.same(JSON.parse(r.body), { done: `/slow/${i}` }, `in-flight request ${i} got its own full body`)
  }
  const exit = await gw.exited
  // the admin listener closes after the public one (it answers 503 "draining" meanwhile)
  t.equal(await tryConnect(gw.adminPort), 'ECONNREFUSED', 'the admin listener is closed too')
  t.equal(exit.code, 0, `exit code 0 (output: ${gw.output()})`)
  t.equal(exit.signal, null, 'exited by itself, not killed by the signal')
  t.ok(exit.at - sigtermAt < 10_000, `exited within the shutdown timeout (${exit.at - sigtermAt} ms)`)
  t.equal(upstream.requests.length, IN_FLIGHT + 1, 'nothing new reached the upstream after SIGTERM')
})

t.test('a request still in flight past server.shutdownTimeout does not keep the process alive', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await slowUpstream(t, 5000)
  const gw = await startProcess(t, key, upstream, '1s')
  const auth = { authorization: `Bearer ${signWith(key, goodClaims())}` }

  const stuck = get(`${PUBLIC_SCHEME}://127.0.0.1:${gw.port}/slow/stuck`, auth).then(r => `status ${r.status}`, (err: NodeJS.ErrnoException) => err.code ?? err.message)
  await waitFor('the request to reach the upstream', () => upstream.requests.length === 1)
  const sigtermAt = Date.now()
  gw.child.kill('SIGTERM')

  const exit = await gw.exited
  const elapsed = exit.at - sigtermAt
  t.equal(exit.code, 0, `exit code 0 (output: ${gw.output()})`)
  t.equal(exit.signal, null, 'exited by itself')
  t.ok(elapsed >= 900, `waited for the 1 s shutdown timeout (${elapsed} ms)`)
  t.ok(elapsed < 4000, `but not for the 5 s upstream (${elapsed} ms)`)
  const outcome = await stuck
  t.not(outcome, 'status 200', `the stuck request did not complete (${outcome})`)
  t.match(gw.output(), /did not finish in time/, 'the forced close is logged')
})
