/**
 * Session costs, measured once and printed as a markdown table (a measurement script,
 * not a test, and not part of the bench/run.ts harness):
 *   node --import tsx bench/sessions.ts [--duration 5] [--trials 100]
 *
 * (i)   login/s against PostgreSQL, the gateway process pinned to core 0 (argon2id-bound);
 * (ii)  refresh/s the same way, each virtual client chaining its own refresh tokens;
 * (iii) revocation propagation between two replica processes (logout on A → 401 on B);
 * (iv)  memory of the in-memory Denylist: 100k and 1M jtis (child with --expose-gc);
 * (v)   PGlite (embedded store): first create and reopen of a data directory, time and RSS.
 *
 * Placement: this script (the load client) and the throwaway PostgreSQL are pinned to
 * core 1, the gateway to core 0 (taskset). The machine is shared: numbers are indicative,
 * and the table says how much of its core the gateway actually got.
 * The gateway runs from source under tsx (`node --import tsx src/cli.ts start`).
 */
import { execFileSync, spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { Denylist } from '../src/pipeline/denylist.js'
import { parseRevocationPayload } from '../src/sessions/revocation-feed.js'
import { usersAdd } from '../src/sessions/admin-commands.js'
import { verifyPassword, hashPassword } from '../src/sessions/passwords.js'
import { openStore } from '../src/sessions/store.js'
import { baseConfig, makeKey } from '../test/fixtures/gateway.js'
import { findPgBinDir, startPostgres } from '../test/fixtures/pg.js'
import { cpuUs, memKiB } from './lib/proc.js'
import { ROOT, startGatewayProcess, type GatewayProcess, type TeardownLike } from '../test/fixtures/process.js'
import { startUpstream } from '../test/fixtures/upstream.js'

const PASSWORD = 'correct horse battery staple'
const USERS = 8

// ---------- child modes: (iv) denylist memory, (v) PGlite ----------

interface MemReading { rssMiB: number, heapUsedMiB: number }

function reading (): MemReading {
  const gc = (globalThis as { gc?: () => void }).gc
  if (gc === undefined) throw new Error('run with --expose-gc')
  gc(); gc()
  const m = process.memoryUsage()
  return { rssMiB: m.rss / 2 ** 20, heapUsedMiB: m.heapUsed / 2 ** 20 }
}

/**
 * `rope`: `add({kind: 'jti', value: randomUUID(), expiresAtSec})` as is. Node 20's
 * randomUUID() returns a string concatenated from 20 pieces, which V8 keeps as a tree of
 * cons strings (a "rope") until something flattens it.
 * `feed`: the entry as the revocation feed makes it, parseRevocationPayload() of the
 * NOTIFY payload: JSON.parse yields flat strings. This is what a replica actually holds.
 */
function denylistChild (mode: string): void {
  const expiresAtSec = Math.floor(Date.now() / 1000) + 600
  const list = new Denylist()
  const base = reading()
  const add = (n: number): number => {
    const t0 = performance.now()
    for (let i = 0; i < n; i++) {
      if (mode === 'feed') {
        const entry = parseRevocationPayload(JSON.stringify({ kind: 'jti', value: randomUUID(), expiresAtSec }))
        if (entry === undefined) throw new Error('unparsable payload')
        list.add(entry)
      } else {
        list.add({ kind: 'jti', value: randomUUID(), expiresAtSec })
      }
    }
    return performance.now() - t0
  }
  const add100kMs = add(100_000)
  const at100k = reading()
  const add900kMs = add(900_000)
  const at1m = reading()
  // a lookup on the hot path: a hit and a miss
  const probe = JSON.parse(JSON.stringify(randomUUID())) as string
  list.add({ kind: 'jti', value: probe, expiresAtSec })
  const t0 = performance.now()
  let hits = 0
  for (let i = 0; i < 1_000_000; i++) if (list.check({ jti: i % 2 === 0 ? probe : 'x' }) !== undefined) hits++
  const checkNs = (performance.now() - t0) * 1e6 / 1_000_000
  const pruneT0 = performance.now()
  const pruned = list.prune(expiresAtSec + 1)
  const pruneMs = performance.now() - pruneT0
  process.stdout.write(JSON.stringify({ base, at100k, at1m, add100kMs, add900kMs, size: pruned, checkNs, hits, pruneMs }))
}

async function pgliteChild (dataDir: string): Promise<void> {
  const t0 = performance.now()
  const store = await openStore({ dataDir })
  const openMs = performance.now() - t0
  const rssMiB = process.memoryUsage().rss / 2 ** 20
  await store.close()
  const peakRssMiB = process.resourceUsage().maxRSS / 1024
  process.stdout.write(JSON.stringify({ openMs, rssMiB, peakRssMiB }))
}

async function runChild<T> (args: string[], nodeArgs: string[] = []): Promise<T> {
  return await new Promise<T>((resolve, reject: (err: Error) => void) => {
    const child = spawn(process.execPath, [...nodeArgs, '--import', 'tsx', 'bench/sessions.ts', ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, NODE_OPTIONS: '' } })
    let out = ''
    child.stdout.on('data', (c: Buffer) => { out += c.toString() })
    child.once('error', (err) => reject(err))
    child.once('exit', (code) => {
      if (code !== 0) { reject(new Error(`child ${args.join(' ')} exited ${code}: ${out}`)); return }
      try { resolve(JSON.parse(out) as T) } catch (err) { reject(err instanceof Error ? err : new Error(String(err))) }
    })
  })
}

// ---------- helpers ----------

class Teardowns implements TeardownLike {
  readonly #fns: Array<() => unknown> = []
  teardown (fn: () => unknown): void { this.#fns.push(fn) }
  async run (): Promise<void> {
    for (const fn of this.#fns.splice(0).reverse()) {
      try { await fn() } catch (err) { process.stderr.write(`teardown: ${String(err)}\n`) }
    }
  }
}

const log = (msg: string): void => { process.stderr.write(`[sessions-bench] ${msg}\n`) }
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

function pct (sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? NaN
}

interface Res { status: number, json: Record<string, any> }

async function post (pool: Pool, path: string, body: unknown, token?: string): Promise<Res> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const r = await pool.request({ method: 'POST', path, headers, body: JSON.stringify(body) })
  const text = await r.body.text()
  let json: Record<string, any> = {}
  try { json = JSON.parse(text) as Record<string, any> } catch {}
  return { status: r.statusCode, json }
}

async function get (pool: Pool, path: string, token: string): Promise<Res> {
  const r = await pool.request({ method: 'GET', path, headers: { authorization: `Bearer ${token}` } })
  const text = await r.body.text()
  let json: Record<string, any> = {}
  try { json = JSON.parse(text) as Record<string, any> } catch {}
  return { status: r.statusCode, json }
}

interface LoadResult {
  requests: number
  errors: number
  rps: number
  p50Ms: number
  p99Ms: number
  cpuMsPerReq: number
  /** gateway CPU time / wall time over the window (1.0 = its core was saturated) */
  gatewayCpuShare: number
  rssMiB: number
  firstError: string | undefined
}

/**
 * `connections` virtual clients, each sending one request after another on its own
 * keep-alive connection, for `warmupMs` (discarded) then `durationMs` (measured).
 */
async function load (gw: GatewayProcess, connections: number, warmupMs: number, durationMs: number,
  makeClient: (pool: Pool, i: number) => Promise<() => Promise<boolean>>): Promise<LoadResult> {
  const pool = new Pool(gw.url, { connections, pipelining: 1, keepAliveTimeout: 30_000 })
  try {
    const steps = await Promise.all(Array.from({ length: connections }, async (_, i) => await makeClient(pool, i)))
    let measuring = false
    const state = { stop: false }
    const latencies: number[] = []
    let errors = 0
    let firstError: string | undefined
    const worker = async (step: () => Promise<boolean>): Promise<void> => {
      while (!state.stop) {
        const t0 = performance.now()
        let ok = false
        try {
          ok = await step()
        } catch (err) {
          firstError ??= String(err)
        }
        if (!measuring) continue
        if (ok) latencies.push(performance.now() - t0)
        else errors++
      }
    }
    const running = steps.map(worker)
    await sleep(warmupMs)
    const cpu0 = cpuUs(gw.pid)
    const t0 = performance.now()
    measuring = true
    await sleep(durationMs)
    measuring = false
    const wallMs = performance.now() - t0
    const cpu1 = cpuUs(gw.pid)
    state.stop = true
    await Promise.all(running)
    latencies.sort((a, b) => a - b)
    const cpuMs = (cpu1 - cpu0) / 1000
    return {
      requests: latencies.length,
      errors,
      rps: latencies.length / (wallMs / 1000),
      p50Ms: pct(latencies, 0.5),
      p99Ms: pct(latencies, 0.99),
      cpuMsPerReq: latencies.length === 0 ? NaN : cpuMs / latencies.length,
      gatewayCpuShare: cpuMs / wallMs,
      rssMiB: memKiB(gw.pid).rss / 1024,
      firstError,
    }
  } finally {
    await pool.close()
  }
}

// ---------- main ----------

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '5' },
      warmup: { type: 'string', default: '1' },
      trials: { type: 'string', default: '100' },
      'login-connections': { type: 'string', default: '4' },
      'refresh-connections': { type: 'string', default: '16' },
      'memory-child': { type: 'string' },
      'pglite-child': { type: 'string' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values['memory-child'] !== undefined) { denylistChild(values['memory-child']); return }
  if (values['pglite-child'] !== undefined) { await pgliteChild(values['pglite-child']); return }
  if (values.help) {
    process.stdout.write('usage: node --import tsx bench/sessions.ts [--duration S] [--warmup S] [--trials N] [--login-connections N] [--refresh-connections N]\n')
    return
  }
  const durationMs = Number(values.duration) * 1000
  const warmupMs = Number(values.warmup) * 1000
  const trials = Number(values.trials)
  const loginConns = Number(values['login-connections'])
  const refreshConns = Number(values['refresh-connections'])

  const rows: Array<[string, string, string]> = []
  const loadStart = loadavg().map(l => l.toFixed(1)).join(' ')
  const td = new Teardowns()
  const onSignal = (): void => { td.run().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  try {
    // the client (this process, all its threads) and PostgreSQL (started from it) on core 1
    execFileSync('taskset', ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' })

    // argon2id reference: one verify here, on core 1, alone
    const hash = await hashPassword(PASSWORD)
    const verifyMs: number[] = []
    for (let i = 0; i < 20; i++) {
      const t0 = performance.now()
      await verifyPassword(hash, PASSWORD)
      verifyMs.push(performance.now() - t0)
    }
    verifyMs.sort((a, b) => a - b)
    const argonMs = pct(verifyMs, 0.5)

    if (findPgBinDir() === undefined) {
      rows.push(['(i)–(iii) PostgreSQL', 'skipped', 'no PostgreSQL server binaries (initdb, pg_ctl)'])
    } else {
      log('starting PostgreSQL')
      const cluster = await startPostgres(td)
      const url = await cluster.createDatabase('bench_sessions')
      const store = await openStore({ url })
      for (let i = 0; i < USERS; i++) await usersAdd(store, { name: `user${i}`, password: PASSWORD, scopes: ['orders:read'] })
      await store.close()

      const upstream = await startUpstream()
      td.teardown(() => upstream.close())
      const key = makeKey('EdDSA')
      const config = baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: upstream.url, rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } }], {
        tokens: { refresh: { transport: 'body' } },
        // every login of the measurement comes from 127.0.0.1: the per-address limits would answer 429
        login: { throttle: { perIp: 1_000_000, perIpTotal: 1_000_000 } },
        logging: { level: 'warn' },
      })
      config.database = { url }

      // (i) and (ii): one gateway on core 0
      log('starting the gateway on core 0')
      const gw = await startGatewayProcess(td, { config, key, wrap: ['taskset', '-c', '0'], name: 'bench-sessions' })

      log(`login load: ${loginConns} connections, ${durationMs / 1000} s`)
      const loginRes = await load(gw, loginConns, warmupMs, durationMs, async (pool, i) => async () => {
        const r = await post(pool, '/auth/login', { username: `user${i % USERS}`, password: PASSWORD })
        return r.status === 200
      })
      const argonBound = 1000 / argonMs
      rows.push(['(i) login/s, PostgreSQL, gateway on 1 core',
        `**${loginRes.rps.toFixed(0)}/s**`,
        `${loginConns} keep-alive conns, ${(durationMs / 1000)} s; p50 ${loginRes.p50Ms.toFixed(1)} ms, p99 ${loginRes.p99Ms.toFixed(1)} ms; ` +
        `${loginRes.cpuMsPerReq.toFixed(2)} ms gateway CPU/login (→ ≈ ${(1000 / loginRes.cpuMsPerReq).toFixed(0)}/s with a whole core), gateway got ${(loginRes.gatewayCpuShare * 100).toFixed(0)} % of its core; ` +
        `errors ${loginRes.errors}; argon2id-bound: one verify = ${argonMs.toFixed(1)} ms here (m=19456 KiB, t=2) → ceiling ≈ ${argonBound.toFixed(0)}/s per core`])

      log(`refresh load: ${refreshConns} connections, ${durationMs / 1000} s`)
      const refreshRes = await load(gw, refreshConns, warmupMs, durationMs, async (pool, i) => {
        // each virtual client logs in once (not measured), then chains its own refresh tokens
        const first = await post(pool, '/auth/login', { username: `user${i % USERS}`, password: PASSWORD })
        if (first.status !== 200) throw new Error(`login for refresh client ${i}: ${first.status} ${JSON.stringify(first.json)}`)
        let token = first.json.refresh_token as string
        return async () => {
          const r = await post(pool, '/auth/refresh', { refresh_token: token })
          if (r.status !== 200) return false
          token = r.json.refresh_token as string
          return true
        }
      })
      rows.push(['(ii) refresh/s, PostgreSQL, gateway on 1 core',
        `**${refreshRes.rps.toFixed(0)}/s**`,
        `${refreshConns} keep-alive conns, each chaining its own token; p50 ${refreshRes.p50Ms.toFixed(1)} ms, p99 ${refreshRes.p99Ms.toFixed(1)} ms; ` +
        `${refreshRes.cpuMsPerReq.toFixed(2)} ms gateway CPU/refresh (→ ≈ ${(1000 / refreshRes.cpuMsPerReq).toFixed(0)}/s with a whole core), gateway got ${(refreshRes.gatewayCpuShare * 100).toFixed(0)} % of its core; errors ${refreshRes.errors}` +
        (refreshRes.firstError === undefined ? '' : ` (${refreshRes.firstError})`)])
      rows.push(['gateway RSS after (i)+(ii)', `${(memKiB(gw.pid).rss / 1024).toFixed(0)} MiB`, `peak ${(memKiB(gw.pid).hwm / 1024).toFixed(0)} MiB`])
      await gw.kill()

      // (iii) two replicas, not pinned (taskset -c 0,1 undoes this process's pinning)
      log(`revocation propagation: ${trials} trials`)
      const [A, B] = await Promise.all([
        startGatewayProcess(td, { config, key, wrap: ['taskset', '-c', '0,1'], name: 'bench-replica-a' }),
        startGatewayProcess(td, { config, key, wrap: ['taskset', '-c', '0,1'], name: 'bench-replica-b' }),
      ]) as [GatewayProcess, GatewayProcess]
      execFileSync('taskset', ['-a', '-cp', '0,1', String(process.pid)], { stdio: 'ignore' })
      const poolA = new Pool(A.url, { connections: 1 })
      const poolB = new Pool(B.url, { connections: 1 })
      const fromRequest: number[] = []
      const fromResponse: number[] = []
      let failures = 0
      const POLL_MS = 5
      try {
        for (let i = 0; i < trials; i++) {
          const login = await post(poolA, '/auth/login', { username: `user${i % USERS}`, password: PASSWORD })
          const access = login.json.access_token as string
          if ((await get(poolB, '/api/orders/1', access)).status !== 200) { failures++; continue }
          const sentAt = performance.now()
          const out = await post(poolA, '/auth/logout', { refresh_token: login.json.refresh_token }, access)
          const answeredAt = performance.now()
          if (out.status !== 204) { failures++; continue }
          let refusedAt: number | undefined
          while (performance.now() - answeredAt < 5000) {
            const r = await get(poolB, '/api/orders/1', access)
            if (r.status === 401 && r.json.code === 'token_revoked') { refusedAt = performance.now(); break }
            await sleep(POLL_MS)
          }
          if (refusedAt === undefined) { failures++; continue }
          fromRequest.push(refusedAt - sentAt)
          fromResponse.push(refusedAt - answeredAt)
        }
      } finally {
        await poolA.close()
        await poolB.close()
      }
      fromRequest.sort((a, b) => a - b)
      fromResponse.sort((a, b) => a - b)
      const f = (xs: number[]): string => `median ${pct(xs, 0.5).toFixed(1)} ms, p95 ${pct(xs, 0.95).toFixed(1)} ms, worst ${(xs.at(-1) ?? NaN).toFixed(1)} ms`
      rows.push(['(iii) revocation propagation A→B, from the logout request',
        `**${f(fromRequest)}**`,
        `${fromRequest.length} trials (${failures} failed), B polled every ${POLL_MS} ms; includes the logout transaction on A`])
      rows.push(['(iii) revocation propagation A→B, from the 204',
        f(fromResponse),
        'time between A answering the logout and B refusing the token (401 token_revoked)'])
      await A.kill()
      await B.kill()
    }

    // (iv) denylist memory, each variant in a fresh process with --expose-gc
    type MemResult = { base: MemReading, at100k: MemReading, at1m: MemReading, add100kMs: number, add900kMs: number, size: number, checkNs: number, pruneMs: number }
    const per100k = (a: MemReading, b: MemReading, n: number, k: keyof MemReading): string => ((b[k] - a[k]) / (n / 100_000)).toFixed(1)
    for (const [mode, label] of [['feed', 'jtis as the feed stores them (JSON.parse of the NOTIFY payload: flat strings)'], ['rope', 'jtis straight from randomUUID() (V8 cons-string ropes)']] as const) {
      log(`denylist memory (${mode})`)
      const mem = await runChild<MemResult>(['--memory-child', mode], ['--expose-gc'])
      rows.push([`(iv) Denylist, 100k ${label}`,
        `**+${per100k(mem.base, mem.at100k, 100_000, 'heapUsedMiB')} MiB heap**, +${per100k(mem.base, mem.at100k, 100_000, 'rssMiB')} MiB RSS`,
        `heap ${mem.base.heapUsedMiB.toFixed(1)} → ${mem.at100k.heapUsedMiB.toFixed(1)} MiB, RSS ${mem.base.rssMiB.toFixed(1)} → ${mem.at100k.rssMiB.toFixed(1)} MiB (gc() before each reading); adding took ${mem.add100kMs.toFixed(0)} ms`])
      rows.push([`(iv) Denylist, 1M ${label}`,
        `**+${per100k(mem.base, mem.at1m, 1_000_000, 'heapUsedMiB')} MiB heap per 100k**, +${per100k(mem.base, mem.at1m, 1_000_000, 'rssMiB')} MiB RSS per 100k`,
        `heap → ${mem.at1m.heapUsedMiB.toFixed(1)} MiB, RSS → ${mem.at1m.rssMiB.toFixed(1)} MiB; 900k more took ${mem.add900kMs.toFixed(0)} ms; check() ${mem.checkNs.toFixed(0)} ns at 1M entries (half hits); prune() dropping all 1M: ${mem.pruneMs.toFixed(0)} ms`])
    }

    // (v) PGlite: first create, then reopen, each in a fresh process
    log('PGlite create and reopen')
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-pglite-'))
    td.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const dataDir = join(dir, 'data')
    type PgliteResult = { openMs: number, rssMiB: number, peakRssMiB: number }
    const created = await runChild<PgliteResult>(['--pglite-child', dataDir])
    const reopened = await runChild<PgliteResult>(['--pglite-child', dataDir])
    rows.push(['(v) PGlite first create (openStore + migrations)', `**${(created.openMs / 1000).toFixed(2)} s**, RSS ${created.rssMiB.toFixed(0)} MiB`, `peak RSS ${created.peakRssMiB.toFixed(0)} MiB (fresh process, unpinned)`])
    rows.push(['(v) PGlite reopen', `**${(reopened.openMs / 1000).toFixed(2)} s**, RSS ${reopened.rssMiB.toFixed(0)} MiB`, `peak RSS ${reopened.peakRssMiB.toFixed(0)} MiB`])
  } finally {
    await td.run()
  }

  const esc = (s: string): string => s.replaceAll('|', '\\|')
  process.stdout.write(`\n## portcullis sessions (${new Date().toISOString()}, Node ${process.version}, gateway under tsx, load average at start ${loadStart}, at end ${loadavg().map(l => l.toFixed(1)).join(' ')})\n\n` +
    '| measurement | result | detail |\n|---|---|---|\n' +
    rows.map(([a, b, c]) => `| ${esc(a)} | ${esc(b)} | ${esc(c)} |`).join('\n') + '\n\n' +
    'Placement: gateway pinned to core 0 (taskset -c 0) for (i)–(ii); load client and PostgreSQL pinned to core 1. ' +
    'Replicas in (iii) and the children of (iv)–(v) unpinned. The 2 cores are shared with other work (see the load average): ' +
    'when the gateway got well under 100 % of its core, throughput is contention-bound and CPU per request is the figure to compare.\n')
}

main().then(() => process.exit(0), (err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(1)
})
