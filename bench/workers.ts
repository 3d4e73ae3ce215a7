/**
 * Workers (issue 12): the gateway as a real process with `server.workers: 1`, then `2`, on
 * PostgreSQL, under the load of the portcullis-EdDSA configuration (same gateway.yaml, route,
 * 10,000-token warm pool, wrk -t1 -c50, same warm-up and measured window), alternating 1 and
 * 2 over `--pairs` pairs.
 *
 *   node --import tsx bench/workers.ts [--pairs 3] [--duration 6] [--warmup 3] [--close-duration 6]
 *                                      [--no-build] [--verbose]
 *
 * What it measures, per run:
 * - CPU µs per request summed over every process of the gateway: with `workers: 1` that is
 *   the one process (no primary: `portcullis start` serves itself); with `workers: 2` the
 *   primary plus each worker, their pids from the primary's GET /admin/workers. utime+stime
 *   from /proc/PID/stat over the measured window ÷ requests, as bench/run.ts does;
 * - throughput and latency (wrk), each process's share of a core, the sum of their peak RSS;
 * - from the gateway's /metrics (prom-client, summed over the workers by the primary):
 *   requests counted and verify-cache misses in the measured window (a warm pool: ≈ 0);
 * - then a second window with `Connection: close` on every request (`--close-duration`,
 *   0 skips it): each request is a new connection, which the primary accepts and hands to a
 *   worker — its CPU µs per connection is the cost that bounds scaling with short connections.
 * Correctness, before the load: on new connections (one per request, so the primary's
 * round-robin reaches every worker) a 200 with a token, a 401 without, and at the upstream
 * `x-user-id` = the token's `sub` although the client sent a spoofed one, no Authorization.
 * Any error response or socket error in a measured window fails the run; a worker that is
 * replaced during a window (pids changed) fails it too.
 *
 * Placement on this 2-core machine: wrk and the upstream pinned to core 1 (as in run.ts),
 * PostgreSQL (idle during the load) on core 1; the gateway is NOT pinned, in both modes, so
 * the only difference between the two is the worker count. With 2 workers the gateway
 * shares core 1 with wrk and the upstream: the throughput says little about scaling here;
 * per-request CPU and correctness are the figures (bench/README.md, "Workers").
 *
 * Warm-up: each worker has its own verify cache, which admits a token on its second use.
 * The warm-up goes on until the gateway has answered WARM_PASSES × pool × workers requests
 * (each worker has seen each pool token ~WARM_PASSES times), so the measured window is the
 * steady state of both modes; the cache misses in the window are reported to show it.
 */
import { readFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { request as httpRequest } from 'node:http'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { parse as parseYaml, stringify } from 'yaml'
import { API_PATH, ROOT, gatewayCommand, writeGatewayYaml } from './lib/portcullis.js'
import { startPg, type PgCluster } from './lib/pg.js'
import { POOL_SIZE, TokenPools } from './lib/pools.js'
import { cpuUs, freePort, memKiB, start, stop, stopAllSync, waitUntil, which, type Started } from './lib/proc.js'
import { median, min, max } from './lib/stats.js'
import { ALGORITHMS, makeKeys, type Algorithm, type KeyMaterial } from './lib/tokens.js'
import { errorCount, rps, runWrk, type WrkResult } from './lib/wrk.js'

const PEERS = join(ROOT, 'bench/peers')
const LOAD_CORE = 1
const CONNECTIONS = 50
/** warm-up target: each worker sees each pool token about this many times */
const WARM_PASSES = 6
const NODE_ENV = { ...process.env, NODE_ENV: 'production' }
const log = (s: string): void => { process.stderr.write(`[workers] ${s}\n`) }

interface Window {
  requests: number
  rps: number
  p50Ms: number
  p99Ms: number
  /** Σ CPU µs of every gateway process ÷ requests */
  cpuUsPerReq: number
  /** the primary's part of it (0 with one worker: there is no primary) */
  primaryUsPerReq: number
  /** each process's share of one core over the window: [primary?, worker…] */
  coreShares: number[]
  upstreamCoreShare: number
  errors: number
}

interface RunResult {
  seq: number
  pair: number
  workers: number
  ok: boolean
  error?: string
  pids: number[]
  keepAlive?: Window
  /** Connection: close on every request: one new connection each */
  close?: Window
  /** from /metrics over the keep-alive window */
  countedRequests?: number
  cacheMisses?: number
  warmRequests?: number
  peakRssMiBSum?: number
  load: string
}

interface Opts { pairs: number, durationSec: number, warmupSec: number, closeSec: number, build: boolean, verbose: boolean }

function options (): Opts {
  const { values } = parseArgs({
    options: {
      pairs: { type: 'string', default: '3' },
      duration: { type: 'string', default: '6' },
      warmup: { type: 'string', default: '3' },
      'close-duration': { type: 'string', default: '6' },
      'no-build': { type: 'boolean', default: false },
      verbose: { type: 'boolean', default: false },
    },
  })
  return {
    pairs: Number(values.pairs),
    durationSec: Number(values.duration),
    warmupSec: Number(values.warmup),
    closeSec: Number(values['close-duration']),
    build: values['no-build'] !== true,
    verbose: values.verbose === true,
  }
}

/** GET on a new connection (agent: false), so that consecutive calls reach different workers */
async function getFresh (url: string, headers: Record<string, string>): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = httpRequest(url, { agent: false, headers: { ...headers, connection: 'close' }, timeout: 5000 }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (d: string) => { body += d })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('timeout')))
    req.on('error', reject)
    req.end()
  })
}

async function check (base: string, pools: TokenPools, rounds: number): Promise<string[]> {
  const problems: string[] = []
  for (let i = 0; i < rounds; i++) {
    const { token, sub } = pools.checkToken('EdDSA')
    const bearer = { authorization: `Bearer ${token}` }
    const ok = await getFresh(base + API_PATH, bearer)
    if (ok.status !== 200) problems.push(`GET ${API_PATH} with a token: ${ok.status} ${ok.body.slice(0, 200)}`)
    const none = await getFresh(base + API_PATH, {})
    if (none.status !== 401) problems.push(`GET ${API_PATH} without a token: ${none.status}, expected 401`)
    const echo = await getFresh(base + '/api/__echo', { ...bearer, 'x-user-id': 'spoofed' })
    if (echo.status !== 200) {
      problems.push(`GET /api/__echo: ${echo.status}`)
    } else {
      const h = (JSON.parse(echo.body) as { headers: Record<string, string> }).headers
      if (h['x-user-id'] !== sub) problems.push(`upstream saw x-user-id=${String(h['x-user-id'])}, expected ${sub}`)
      if (h.authorization !== undefined) problems.push('upstream saw the Authorization header')
    }
  }
  return problems
}

/** Σ of every sample of the named metric in a Prometheus text exposition */
function metricSum (text: string, name: string): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue
    const rest = line.slice(name.length)
    if (rest[0] !== ' ' && rest[0] !== '{') continue
    sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

async function metrics (adminPort: number): Promise<string> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/metrics`, { signal: AbortSignal.timeout(5000) })
  return await r.text()
}

async function workerPids (adminPort: number): Promise<Array<{ pid: number, listening: boolean }>> {
  const r = await fetch(`http://127.0.0.1:${adminPort}/admin/workers`, { signal: AbortSignal.timeout(2000) })
  if (r.status !== 200) throw new Error(`/admin/workers: ${r.status}`)
  return ((await r.json()) as { workers: Array<{ pid: number, listening: boolean }> }).workers
}

/** one measured window over `pids` (pids[0] is the primary when there are several) */
async function window (o: { url: string, pids: number[], hasPrimary: boolean, upstreamPid: number, tokenFile: string, durationSec: number, close: boolean }): Promise<{ w: WrkResult, win: Window }> {
  const before = o.pids.map(cpuUs)
  const up0 = cpuUs(o.upstreamPid)
  const t0 = process.hrtime.bigint()
  const w = await runWrk({ url: o.url, core: LOAD_CORE, connections: CONNECTIONS, durationSec: o.durationSec, tokenFile: o.tokenFile, path: API_PATH, mode: 'pool', ...(o.close ? { connection: 'close' } : {}) })
  const wallUs = Number(process.hrtime.bigint() - t0) / 1000
  const deltas = o.pids.map((pid, i) => cpuUs(pid) - (before[i] as number))
  const up1 = cpuUs(o.upstreamPid)
  const total = deltas.reduce((a, b) => a + b, 0)
  return {
    w,
    win: {
      requests: w.requests,
      rps: rps(w),
      p50Ms: w.p50Us / 1000,
      p99Ms: w.p99Us / 1000,
      cpuUsPerReq: total / w.requests,
      primaryUsPerReq: o.hasPrimary ? (deltas[0] as number) / w.requests : 0,
      coreShares: deltas.map((d) => d / wallUs),
      upstreamCoreShare: (up1 - up0) / wallUs,
      errors: errorCount(w),
    },
  }
}

async function runOne (workers: number, seq: number, pair: number, ctx: { dir: string, pg: PgCluster, pools: TokenPools, keys: KeyMaterial, opts: Opts, gateway: NonNullable<ReturnType<typeof gatewayCommand>> }): Promise<RunResult> {
  const res: RunResult = { seq, pair, workers, ok: false, pids: [], load: loadavg().map((l) => l.toFixed(2)).join(' ') }
  const runDir = join(ctx.dir, `${String(seq).padStart(2, '0')}-w${workers}`)
  mkdirSync(runDir, { recursive: true })
  let upstream: Started | undefined
  let sut: Started | undefined
  try {
    const upPort = await freePort()
    upstream = start({ name: 'upstream', core: LOAD_CORE, cmd: process.execPath, args: [join(PEERS, 'upstream.mjs')], env: { ...NODE_ENV, PORT: String(upPort) }, cwd: ROOT, logFile: join(runDir, 'upstream.log') })
    await waitUntil(upstream, async () => (await fetch(`http://127.0.0.1:${upPort}/ready`, { signal: AbortSignal.timeout(1000) })).ok)
    const port = await freePort()
    const adminPort = await freePort()
    const file = writeGatewayYaml({
      file: join(runDir, 'gateway.yaml'),
      port,
      adminPort,
      upstream: `http://127.0.0.1:${upPort}`,
      keys: ctx.keys,
      databaseUrl: ctx.pg.url('bench_workers'),
      dataDir: join(runDir, 'data'),
    })
    // the same gateway.yaml as portcullis-EdDSA, plus the worker count
    const doc = parseYaml(readFileSync(file, 'utf8')) as { server: Record<string, unknown> }
    doc.server.workers = workers
    writeFileSync(file, stringify(doc))
    // not pinned (core undefined): with 2 workers, using both cores is the point
    sut = start({ name: 'portcullis', cmd: ctx.gateway.cmd, args: ctx.gateway.args(file), env: NODE_ENV, cwd: ROOT, logFile: join(runDir, 'sut.log') })
    const s = sut
    await waitUntil(s, async () => {
      if ((await fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(1000) })).status !== 200) return false
      if (workers === 1) return true
      const list = await workerPids(adminPort)
      return list.length === workers && list.every((w) => w.listening)
    }, 60_000)
    const pids = workers === 1 ? [s.pid] : [s.pid, ...(await workerPids(adminPort)).map((w) => w.pid)]
    res.pids = pids
    const base = `http://127.0.0.1:${port}`
    const problems = await check(base, ctx.pools, 2 * workers + 1)
    if (problems.length > 0) throw new Error(`checks failed: ${problems.join('; ')}`)

    const pool = ctx.pools.get('EdDSA', 'pool')
    let warm = 0
    for (let round = 0; round < 8 && warm < WARM_PASSES * POOL_SIZE * workers; round++) {
      // each round goes on in the pool where the last stopped (wrk starts at its offset)
      const w = await runWrk({ url: base, core: LOAD_CORE, connections: CONNECTIONS, durationSec: ctx.opts.warmupSec, tokenFile: pool.file, path: API_PATH, mode: 'pool', offset: warm % POOL_SIZE })
      if (errorCount(w) > 0) throw new Error(`warm-up: ${errorCount(w)} errors of ${w.requests}`)
      warm += w.requests
    }
    res.warmRequests = warm

    const m0 = await metrics(adminPort)
    const ka = await window({ url: base, pids, hasPrimary: workers > 1, upstreamPid: upstream.pid, tokenFile: pool.file, durationSec: ctx.opts.durationSec, close: false })
    const m1 = await metrics(adminPort)
    res.keepAlive = ka.win
    res.countedRequests = metricSum(m1, 'portcullis_requests_total') - metricSum(m0, 'portcullis_requests_total')
    res.cacheMisses = metricSum(m1, 'portcullis_verify_cache_misses_total') - metricSum(m0, 'portcullis_verify_cache_misses_total')
    if (ka.win.errors > 0) throw new Error(`${ka.win.errors} errors in the keep-alive window`)

    if (ctx.opts.closeSec > 0) {
      const cl = await window({ url: base, pids, hasPrimary: workers > 1, upstreamPid: upstream.pid, tokenFile: pool.file, durationSec: ctx.opts.closeSec, close: true })
      res.close = cl.win
      if (cl.win.errors > 0) throw new Error(`${cl.win.errors} errors in the Connection: close window (status ${cl.w.statusErrors}, connect ${cl.w.connectErrors}, read ${cl.w.readErrors}, write ${cl.w.writeErrors}, timeout ${cl.w.timeouts})`)
    }
    const after = workers === 1 ? [s.pid] : [s.pid, ...(await workerPids(adminPort)).map((w) => w.pid)]
    if (after.join(',') !== pids.join(',')) throw new Error(`the worker set changed during the run: ${pids.join(',')} → ${after.join(',')}`)
    res.peakRssMiBSum = pids.map((pid) => memKiB(pid).hwm).reduce((a, b) => a + b, 0) / 1024
    res.ok = true
  } catch (err) {
    res.error = err instanceof Error ? err.message : String(err)
  } finally {
    // SIGTERM to the primary drains every worker (src/workers.ts)
    if (sut !== undefined) await stop(sut, 8000)
    if (upstream !== undefined) await stop(upstream)
    if (!ctx.opts.verbose) rmSync(runDir, { recursive: true, force: true })
  }
  return res
}

const f1 = (x: number | undefined): string => x === undefined || Number.isNaN(x) ? '–' : x.toFixed(1)
const f2 = (x: number | undefined): string => x === undefined || Number.isNaN(x) ? '–' : x.toFixed(2)
const int = (x: number | undefined): string => x === undefined || Number.isNaN(x) ? '–' : Math.round(x).toLocaleString('en-US')
const pct = (x: number): string => `${Math.round(x * 100)} %`

function render (runs: RunResult[], opts: Opts, meta: Record<string, string>): string {
  const out: string[] = []
  out.push(`## Workers: server.workers 1 vs 2 (${meta.takenAt})`, '')
  out.push(`Machine: ${meta.cpu}, Node ${meta.node}, commit ${meta.commit}, gateway as ${meta.gateway}; load before: ${meta.loadBefore}, after: ${meta.loadAfter}.`)
  out.push(`Method: portcullis-EdDSA's gateway.yaml + \`server.workers\`, PostgreSQL store; wrk -t1 -c${CONNECTIONS} and the upstream on core ${LOAD_CORE}, the gateway not pinned; ${opts.pairs} pair(s) 1 → 2; warm-up ≥ ${opts.warmupSec} s and ≥ ${WARM_PASSES} × ${POOL_SIZE.toLocaleString('en-US')} × workers requests, measured ${opts.durationSec} s keep-alive${opts.closeSec > 0 ? ` then ${opts.closeSec} s with \`Connection: close\`` : ''}. CPU = utime+stime of every gateway process (primary + workers) ÷ requests.`, '')
  out.push('| run | workers | req/s | p50 ms | p99 ms | CPU µs/req (all processes) | of which primary | core share per process | upstream core | verify misses in window | requests counted ÷ wrk | Σ peak RSS MiB | warm-up requests | load |')
  out.push('|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---|')
  for (const r of runs) {
    const k = r.keepAlive
    if (!r.ok || k === undefined) { out.push(`| ${r.seq} | ${r.workers} | FAILED: ${(r.error ?? '').replace(/\|/g, '/').slice(0, 300)} |||||||||||| ${r.load} |`); continue }
    out.push(`| ${r.seq} | ${r.workers} | ${int(k.rps)} | ${f2(k.p50Ms)} | ${f2(k.p99Ms)} | ${f1(k.cpuUsPerReq)} | ${r.workers > 1 ? f1(k.primaryUsPerReq) : '(no primary)'} | ${k.coreShares.map(pct).join(' / ')} | ${pct(k.upstreamCoreShare)} | ${int(r.cacheMisses)} | ${f2((r.countedRequests ?? NaN) / k.requests)} | ${int(r.peakRssMiBSum)} | ${int(r.warmRequests)} | ${r.load} |`)
  }
  out.push('')
  const ok = runs.filter((r) => r.ok && r.keepAlive !== undefined)
  const by = (n: number): RunResult[] => ok.filter((r) => r.workers === n)
  const pairs: Array<{ one: RunResult, two: RunResult }> = []
  for (let p = 0; p < opts.pairs; p++) {
    const one = by(1).find((r) => r.pair === p)
    const two = by(2).find((r) => r.pair === p)
    if (one !== undefined && two !== undefined) pairs.push({ one, two })
  }
  const cpuRatios = pairs.map((p) => (p.two.keepAlive as Window).cpuUsPerReq / (p.one.keepAlive as Window).cpuUsPerReq)
  const rpsRatios = pairs.map((p) => (p.two.keepAlive as Window).rps / (p.one.keepAlive as Window).rps)
  out.push('| | 1 worker | 2 workers | 2 ÷ 1, median of pairs (min–max) |')
  out.push('|---|---:|---:|---:|')
  const med = (rs: RunResult[], f: (r: RunResult) => number | undefined): number => median(rs.map(f).filter((x): x is number => x !== undefined && !Number.isNaN(x)))
  out.push(`| CPU µs/req, keep-alive (all processes) | ${f1(med(by(1), (r) => r.keepAlive?.cpuUsPerReq))} | ${f1(med(by(2), (r) => r.keepAlive?.cpuUsPerReq))} | ${f2(median(cpuRatios))} (${f2(min(cpuRatios))}–${f2(max(cpuRatios))}) |`)
  out.push(`| of which the primary | – | ${f1(med(by(2), (r) => r.keepAlive?.primaryUsPerReq))} | |`)
  out.push(`| req/s, keep-alive | ${int(med(by(1), (r) => r.keepAlive?.rps))} | ${int(med(by(2), (r) => r.keepAlive?.rps))} | ${f2(median(rpsRatios))} (${f2(min(rpsRatios))}–${f2(max(rpsRatios))}) |`)
  out.push(`| Σ core share of the gateway, keep-alive | ${f2(med(by(1), (r) => r.keepAlive?.coreShares.reduce((a, b) => a + b, 0)))} | ${f2(med(by(2), (r) => r.keepAlive?.coreShares.reduce((a, b) => a + b, 0)))} | |`)
  if (opts.closeSec > 0) {
    const closeCpu = pairs.filter((p) => p.one.close !== undefined && p.two.close !== undefined).map((p) => (p.two.close as Window).cpuUsPerReq / (p.one.close as Window).cpuUsPerReq)
    out.push(`| CPU µs/req, Connection: close (a new connection per request) | ${f1(med(by(1), (r) => r.close?.cpuUsPerReq))} | ${f1(med(by(2), (r) => r.close?.cpuUsPerReq))} | ${f2(median(closeCpu))} (${f2(min(closeCpu))}–${f2(max(closeCpu))}) |`)
    out.push(`| of which the primary (accept + hand-over, per connection) | – | ${f1(med(by(2), (r) => r.close?.primaryUsPerReq))} | |`)
    out.push(`| req/s, Connection: close | ${int(med(by(1), (r) => r.close?.rps))} | ${int(med(by(2), (r) => r.close?.rps))} | |`)
  }
  out.push('', `Runs: ${ok.length} of ${runs.length} passed (checks, 0 errors in every window).`)
  return out.join('\n')
}

/** the checked-out commit, read from .git (short form), without running git */
function headCommit (): string {
  try {
    const head = readFileSync(join(ROOT, '.git/HEAD'), 'utf8').trim()
    if (!head.startsWith('ref: ')) return head.slice(0, 7)
    const ref = head.slice(5)
    try { return readFileSync(join(ROOT, '.git', ref), 'utf8').trim().slice(0, 7) } catch {}
    const packed = readFileSync(join(ROOT, '.git/packed-refs'), 'utf8').split('\n').find((l) => l.endsWith(' ' + ref))
    return packed?.slice(0, 7) ?? '?'
  } catch { return '?' }
}

async function main (): Promise<void> {
  const opts = options()
  if (which('wrk') === undefined) { log('wrk is required: apt-get install -y wrk'); process.exit(2) }
  if (cpus().length < 2 || which('taskset') === undefined) { log('needs 2 cores and taskset (wrk on its own core)'); process.exit(2) }
  const loadBefore = readFileSync('/proc/loadavg', 'utf8').trim()
  const takenAt = new Date().toISOString()
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-workers-'))
  let pg: PgCluster | undefined
  const cleanup = (): void => {
    stopAllSync()
    pg?.stop()
    if (!opts.verbose) rmSync(dir, { recursive: true, force: true })
  }
  process.once('SIGINT', () => { cleanup(); process.exit(130) })
  process.once('SIGTERM', () => { cleanup(); process.exit(143) })
  try {
    const gateway = gatewayCommand({ build: opts.build })
    if (gateway === undefined) throw new Error('no src/cli.ts')
    log(`portcullis runs as ${gateway.note}`)
    const why: string[] = []
    // workers > 1 need PostgreSQL (the embedded store belongs to one process)
    pg = startPg(await freePort(), LOAD_CORE, why)
    if (pg === undefined) throw new Error(`PostgreSQL is required: ${why.join('; ')}`)
    pg.createDb('bench_workers')
    const keysDir = join(dir, 'keys')
    mkdirSync(keysDir)
    const keys = Object.fromEntries(ALGORITHMS.map((a) => [a, makeKeys(a, keysDir)])) as Record<Algorithm, KeyMaterial>
    const pools = new TokenPools(dir, keys, 0)
    const runs: RunResult[] = []
    let seq = 0
    for (let pair = 0; pair < opts.pairs; pair++) {
      for (const workers of [1, 2]) {
        const r = await runOne(workers, seq++, pair, { dir, pg, pools, keys: keys.EdDSA, opts, gateway })
        runs.push(r)
        const k = r.keepAlive
        const c = r.close
        log(r.ok && k !== undefined
          ? `pair ${pair} workers ${workers}: ${int(k.rps)} req/s, ${f1(k.cpuUsPerReq)} µs/req (primary ${f1(k.primaryUsPerReq)}), shares ${k.coreShares.map(pct).join('/')}, misses ${int(r.cacheMisses)}${c !== undefined ? `; close: ${int(c.rps)} req/s, ${f1(c.cpuUsPerReq)} µs/req (primary ${f1(c.primaryUsPerReq)})` : ''}`
          : `pair ${pair} workers ${workers}: FAILED ${r.error ?? ''}`)
      }
    }
    const meta = {
      takenAt,
      cpu: `${cpus()[0]?.model ?? '?'} × ${cpus().length}`,
      node: process.version,
      commit: headCommit(),
      gateway: gateway.note,
      loadBefore,
      loadAfter: readFileSync('/proc/loadavg', 'utf8').trim(),
    }
    const text = render(runs, opts, meta)
    process.stdout.write(text + '\n')
    const resultsDir = join(ROOT, 'bench/results')
    mkdirSync(resultsDir, { recursive: true })
    const stamp = takenAt.replace(/[:.]/g, '-')
    const json = JSON.stringify({ meta, opts, runs }, null, 2)
    writeFileSync(join(resultsDir, `workers-${stamp}.json`), json)
    writeFileSync(join(resultsDir, 'workers-latest.json'), json)
    writeFileSync(join(resultsDir, 'workers-latest.md'), text + '\n')
    log(`results: bench/results/workers-${stamp}.json (and workers-latest.{json,md})`)
    if (runs.some((r) => !r.ok)) process.exitCode = 1
  } finally {
    cleanup()
  }
}

await main()
