/**
 * The configurations under test, how each is started (fresh processes every run), checked
 * (a 200 with a token, a 401 without, identity headers at the upstream) and measured.
 */
import { rmSync, statSync, openSync, readSync, closeSync, mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { startPerf, stopPerf, summarizePerf, type PerfRecording } from './perf.js'
import { cpuTimesUs, cpuUs, freePort, memKiB, start, stop, threadCpuUs, threadDeltaPerReq, waitUntil, type Started } from './proc.js'
import { runWrk, rps, errorCount, type WrkResult } from './wrk.js'
import { writeNginxConf } from './nginx.js'
import { API_PATH, ASSERTION_AUDIENCE, ASSERTION_HEADER, ROOT, writeGatewayYaml, type GatewayCommand } from './portcullis.js'
import type { BenchIdp } from './idp.js'
import type { Baseline } from './baseline.js'
import { AUDIENCE, ISSUER, SCOPE, type Algorithm, type KeyMaterial } from './tokens.js'
import { POOL_SIZE, type TokenPools } from './pools.js'
import type { PgCluster } from './pg.js'

const PEERS = fileURLToPath(new URL('../peers/', import.meta.url))

export type Kind = 'direct' | 'nginx' | 'bare' | 'portcullis' | 'express' | 'fast-gateway'

export interface Config {
  id: string
  kind: Kind
  alg?: Algorithm
  /** every request carries a token never seen before */
  cold?: boolean
  /** PostgreSQL database name for portcullis (PostgreSQL mode); undefined → embedded store */
  database?: string | undefined
  /** extra routes before the /api route (the 10k-routes check) */
  extraRoutes?: number
  /** a token whose jti is on the denylist must get 401 (the 1M-jti check) */
  revokedJti?: string
  /** wrk connections (default 50) */
  connections?: number
  /** 1 MB POST bodies echoed back by the upstream */
  bigBody?: boolean
  /** portcullis without its decision log line (what that line costs) */
  noDecisionLog?: boolean
  /** extra node arguments for the system under test (e.g. --cpu-prof) */
  nodeArgs?: string[]
  /** tokens of the stand-in identity provider (bench/lib/idp.ts), keys from its JWKS */
  external?: boolean
  /** the measured route sends a signed assertion (identity.assertion) */
  assertion?: boolean
  /** run the --baseline checkout's gateway instead (bench/lib/baseline.ts) */
  baseline?: boolean
}

export const authed = (c: Config): boolean => c.kind === 'portcullis' || c.kind === 'express' || c.kind === 'fast-gateway'

export interface Ctx {
  dir: string
  /** core for the system under test, and for wrk + upstream (undefined: no pinning) */
  sutCore: number | undefined
  loadCore: number | undefined
  keys: Record<Algorithm, KeyMaterial>
  pools: TokenPools
  gateway: GatewayCommand | undefined
  pg: PgCluster | undefined
  /** the stand-in identity provider of the external configurations */
  idp: BenchIdp | undefined
  /** another checkout's gateway (--baseline) */
  baseline?: Baseline | undefined
  bodyFile: string
  warmupSec: number
  durationSec: number
  verbose: boolean
  /** --perf: where each portcullis run's perf summary goes */
  perfDir?: string | undefined
  /** --perf-keep: call graphs, and perf.data kept in the run's directory */
  perfKeep?: boolean
}

export interface RunRecord {
  seq: number
  rep: number
  id: string
  ok: boolean
  error?: string
  rps: number
  p50Us: number
  p99Us: number
  cpuUsPerReq: number
  /** the kernel's part of cpuUsPerReq (syscalls: socket reads and writes, log writes) */
  sysUsPerReq?: number
  /** cpuUsPerReq by thread: `main` (the JS thread) and the helpers by name (V8's GC and compiler threads, libuv's pool) */
  threadsUsPerReq?: Record<string, number>
  peakRssKiB: number
  /** share of its core the upstream used during the measured window (1 = saturated) */
  upstreamCoreShare: number
  /** share of its core the system under test used (≈ 1 when it is the bottleneck) */
  sutCoreShare: number
  /** output lines the system under test wrote per request (decision log ≈ 1 for portcullis) */
  logLinesPerReq: number
  wrk?: WrkResult
  startedAt: string
}

interface Launched {
  port: number
  sut: Started
  upstream: Started
  adminPort?: number
}

const NODE_ENV = { ...process.env, NODE_ENV: 'production' }

async function httpOk (url: string): Promise<boolean> {
  const r = await fetch(url, { signal: AbortSignal.timeout(1000) })
  await r.arrayBuffer()
  return true
}

async function launch (c: Config, ctx: Ctx, logDir: string): Promise<Launched> {
  const upPort = await freePort()
  const upCore = c.kind === 'direct' ? ctx.sutCore : ctx.loadCore
  const upstream = start({ name: 'upstream', core: upCore, cmd: process.execPath, args: [join(PEERS, 'upstream.mjs')], env: { ...NODE_ENV, PORT: String(upPort) }, cwd: ROOT, logFile: join(logDir, 'upstream.log') })
  await waitUntil(upstream, async () => await httpOk(`http://127.0.0.1:${upPort}/ready`))
  const upstreamUrl = `http://127.0.0.1:${upPort}`
  if (c.kind === 'direct') return { port: upPort, sut: upstream, upstream }

  const port = await freePort()
  const logFile = join(logDir, 'sut.log')
  let sut: Started
  let adminPort: number | undefined
  const authEnv = (alg: Algorithm): NodeJS.ProcessEnv => {
    const k = ctx.keys[alg]
    return {
      JWT_ALG: alg,
      JWT_ISSUER: ISSUER,
      JWT_AUDIENCE: AUDIENCE,
      REQUIRED_SCOPE: SCOPE,
      ...(k.publicKeyFile !== undefined ? { JWT_PUBLIC_KEY_FILE: k.publicKeyFile } : { JWT_SECRET: k.secret }),
    }
  }
  switch (c.kind) {
    case 'nginx': {
      const conf = writeNginxConf(logDir, port, upPort)
      sut = start({ name: 'nginx', core: ctx.sutCore, cmd: 'nginx', args: ['-p', logDir, '-c', conf, '-e', join(logDir, 'error.log')], logFile })
      break
    }
    case 'bare':
      sut = start({ name: 'bare', core: ctx.sutCore, cmd: process.execPath, args: [...(c.nodeArgs ?? []), join(PEERS, 'bare.mjs')], env: { ...NODE_ENV, PORT: String(port), UPSTREAM: upstreamUrl }, cwd: ROOT, logFile })
      break
    case 'express':
    case 'fast-gateway':
      sut = start({ name: c.kind, core: ctx.sutCore, cmd: process.execPath, args: [...(c.nodeArgs ?? []), join(PEERS, `${c.kind}.mjs`)], env: { ...NODE_ENV, ...authEnv(c.alg ?? 'EdDSA'), PORT: String(port), UPSTREAM: upstreamUrl }, cwd: ROOT, logFile })
      break
    case 'portcullis': {
      if (ctx.gateway === undefined) throw new Error('the gateway is not built yet (no src/cli.ts)')
      adminPort = await freePort()
      const dataDir = join(logDir, 'data')
      const other = c.baseline === true ? ctx.baseline : undefined
      if (c.baseline === true && other === undefined) throw new Error('a baseline configuration without --baseline')
      const file = (other?.writeYaml ?? writeGatewayYaml)({
        file: join(logDir, 'gateway.yaml'),
        port,
        adminPort,
        upstream: upstreamUrl,
        keys: ctx.keys[c.alg ?? 'EdDSA'],
        databaseUrl: c.database !== undefined && ctx.pg !== undefined ? ctx.pg.url(c.database) : '',
        dataDir,
        extraRoutes: c.extraRoutes ?? 0,
        decisions: c.noDecisionLog !== true,
        externalIssuer: c.external === true && ctx.idp !== undefined ? { issuer: ctx.idp.issuer, audience: ctx.idp.audience } : undefined,
        assertion: c.assertion,
      })
      const g = other?.gateway ?? ctx.gateway
      sut = start({ name: 'portcullis', core: ctx.sutCore, cmd: g.cmd, args: [...(c.nodeArgs ?? []), ...g.args(file)], env: NODE_ENV, cwd: other?.root ?? ROOT, logFile })
      break
    }
  }
  const ready = c.kind === 'portcullis'
    ? async () => (await fetch(`http://127.0.0.1:${String(adminPort)}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200
    : async () => await httpOk(`http://127.0.0.1:${port}${API_PATH}`)
  try {
    await waitUntil(sut, ready, 60_000)
  } catch (err) {
    await stop(sut)
    await stop(upstream)
    throw err
  }
  return { port, sut, upstream, ...(adminPort !== undefined ? { adminPort } : {}) }
}

/** what a client and the upstream must see; returns the problems found */
async function check (c: Config, pools: TokenPools, base: string, token: string, sub: string): Promise<string[]> {
  const problems: string[] = []
  const get = async (path: string, headers: Record<string, string>): Promise<{ status: number, body: string }> => {
    const r = await fetch(base + path, { headers, signal: AbortSignal.timeout(5000) })
    return { status: r.status, body: await r.text() }
  }
  const bearer = { authorization: `Bearer ${token}` }
  const ok = await get(API_PATH, bearer)
  if (ok.status !== 200) problems.push(`GET ${API_PATH} with a token: ${ok.status} ${ok.body.slice(0, 200)}`)
  if (!authed(c)) return problems
  const none = await get(API_PATH, {})
  if (none.status !== 401) problems.push(`GET ${API_PATH} without a token: ${none.status}, expected 401`)
  const echo = await get('/api/__echo', { ...bearer, 'x-user-id': 'spoofed' })
  if (echo.status !== 200) {
    problems.push(`GET /api/__echo with a token: ${echo.status}`)
  } else {
    const h = (JSON.parse(echo.body) as { headers: Record<string, string> }).headers
    if (h['x-user-id'] !== sub) problems.push(`upstream saw x-user-id=${String(h['x-user-id'])}, expected ${sub}`)
    if (h.authorization !== undefined) problems.push('upstream saw the Authorization header')
    if (c.assertion === true) {
      const a = h[ASSERTION_HEADER]
      const aud = typeof a === 'string' ? (JSON.parse(Buffer.from(a.split('.')[1] ?? '', 'base64url').toString()) as { aud?: unknown }).aud : undefined
      if (aud !== ASSERTION_AUDIENCE) problems.push(`upstream saw no assertion for ${ASSERTION_AUDIENCE} (${typeof a === 'string' ? `aud ${String(aud)}` : 'none'})`)
    }
  }
  if (c.revokedJti !== undefined) {
    const revoked = await get(API_PATH, { authorization: `Bearer ${pools.tokenWithJti(c.alg ?? 'EdDSA', c.revokedJti)}` })
    if (revoked.status !== 401) problems.push(`a token with a denylisted jti: ${revoked.status}, expected 401`)
  }
  return problems
}

function countLines (file: string): number {
  let n = 0
  const fd = openSync(file, 'r')
  const buf = Buffer.alloc(1 << 20)
  let read: number
  while ((read = readSync(fd, buf, 0, buf.length, null)) > 0) {
    for (let i = 0; i < read; i++) if (buf[i] === 10) n++
  }
  closeSync(fd)
  return n
}

/** portcullis's verify cache entries (`portcullis_verify_cache_entries`, also in older trees' metrics), or undefined without an admin port */
async function cachedTokens (adminPort: number | undefined): Promise<number | undefined> {
  if (adminPort === undefined) return undefined
  const text = await (await fetch(`http://127.0.0.1:${String(adminPort)}/metrics`, { signal: AbortSignal.timeout(2000) })).text()
  const m = /^portcullis_verify_cache_entries (\d+)/m.exec(text)
  return m === null ? undefined : Number(m[1])
}

/** the pre-formatted requests bench/wrk/load.lua keeps when each carries a body (one token each) */
export const BODY_REQUESTS = 16

/** how many times the warm-up sends the whole token pool (see measure) */
const WARM_PASSES = 2

/** the longest the warm-up goes on for a pool that is not yet cached (see measure) */
export const WARM_LIMIT_MS = 90_000

/**
 * Whether the warm-up must go on: until the pool has been sent WARM_PASSES times and the verify
 * cache holds all of it (`cached` is undefined where there is no admin port to ask), bounded by
 * time rather than by a count of rounds — a round of `--smoke`'s 1 s sends a sixth of what it
 * sends on an idle machine when the machine is busy, and six such rounds left the pool half warm.
 */
export function keepWarming (w: { requests: number, cached: number | undefined, cycled: number, connections: number, elapsedMs: number }): boolean {
  const warm = w.requests >= WARM_PASSES * w.cycled + w.connections && (w.cached ?? w.cycled) >= w.cycled
  return !warm && w.elapsedMs < WARM_LIMIT_MS
}

/** one measured run of one configuration, with fresh processes */
export async function measure (c: Config, ctx: Ctx, seq: number, rep: number): Promise<RunRecord> {
  const logDir = join(ctx.dir, 'runs', `${String(seq).padStart(3, '0')}-${c.id}`)
  mkdirSync(logDir, { recursive: true })
  const rec: RunRecord = { seq, rep, id: c.id, ok: false, rps: NaN, p50Us: NaN, p99Us: NaN, cpuUsPerReq: NaN, peakRssKiB: NaN, upstreamCoreShare: NaN, sutCoreShare: NaN, logLinesPerReq: NaN, startedAt: new Date().toISOString() }
  let l: Launched | undefined
  let perf: PerfRecording | undefined
  try {
    const alg = c.alg ?? 'EdDSA'
    const needsTokens = authed(c)
    // non-auth configurations get the same Authorization header: equal request bytes
    const pool = ctx.pools.get(alg, c.cold === true ? 'cold' : 'pool', c.external === true)
    // the tokens wrk actually cycles: with a 1 MB body, load.lua keeps only the first few
    const cycled = c.bigBody === true ? BODY_REQUESTS : POOL_SIZE
    const probe = ctx.pools.checkToken(alg, c.external === true)
    l = await launch(c, ctx, logDir)
    const base = `http://127.0.0.1:${l.port}`
    const problems = await check(c, ctx.pools, base, probe.token, probe.sub)
    if (problems.length > 0) throw new Error(`checks failed: ${problems.join('; ')}`)
    const common = {
      url: base,
      core: ctx.loadCore,
      connections: c.connections ?? 50,
      tokenFile: pool.file,
      path: API_PATH,
      method: c.bigBody === true ? 'POST' as const : 'GET' as const,
      bodyFile: c.bigBody === true ? ctx.bodyFile : undefined,
      mode: c.cold === true ? 'cold' as const : 'pool' as const,
    }
    const warm = await runWrk({ ...common, durationSec: ctx.warmupSec })
    if (needsTokens && warm.statusErrors > 0) throw new Error(`warm-up: ${warm.statusErrors} error responses of ${warm.requests}`)
    // a warm pool means every token of it is in the verify cache, which admits a token on its
    // second verification (src/tokens/verify-cache.ts): the warm-up goes on until it has sent
    // the whole pool twice (for at most WARM_LIMIT_MS). With one pass, as before 2026-12-01, a slow
    // start left up to a pool's worth of verifications in the measured window — ~20 % of a
    // 4-second EdDSA window, more for the slower of two gateways compared in pairs.
    if (needsTokens && c.cold !== true) {
      const started = Date.now()
      const notWarm = async (): Promise<boolean> => keepWarming({ requests: warm.requests, cached: await cachedTokens(l?.adminPort), cycled, connections: common.connections, elapsedMs: Date.now() - started })
      while (await notWarm()) {
        // each wrk starts at its offset: go on where the last one stopped, or a warm-up run
        // shorter than a pass would send the pool's first tokens again and never its last
        const more = await runWrk({ ...common, durationSec: ctx.warmupSec, offset: warm.requests % cycled })
        warm.requests += more.requests
      }
      // only portcullis has an admin port
      const cached = await cachedTokens(l.adminPort)
      if (cached !== undefined && cached < cycled) throw new Error(`not warm: ${cached} of the ${cycled} tokens in the verify cache after ${warm.requests} warm-up requests`)
    }
    // cold: the measured window starts past every token the warm-up could have sent
    const offset = c.cold === true ? warm.requests + common.connections + 100 : 0
    perf = ctx.perfDir !== undefined && c.kind === 'portcullis' ? startPerf(l.sut.pid, join(logDir, 'perf.data'), ctx.perfKeep === true) : undefined
    const cpu0 = cpuUs(l.sut.pid)
    const sys0 = cpuTimesUs(l.sut.pid).system
    const threads0 = threadCpuUs(l.sut.pid)
    const up0 = cpuUs(l.upstream.pid)
    const t0 = process.hrtime.bigint()
    const w = await runWrk({ ...common, durationSec: ctx.durationSec, offset })
    const wallUs = Number(process.hrtime.bigint() - t0) / 1000
    const cpu1 = cpuUs(l.sut.pid)
    const sys1 = cpuTimesUs(l.sut.pid).system
    const threads1 = threadCpuUs(l.sut.pid)
    if (perf !== undefined) await stopPerf(perf)
    const up1 = cpuUs(l.upstream.pid)
    const mem = memKiB(l.sut.pid)
    rec.wrk = w
    rec.rps = rps(w)
    rec.p50Us = w.p50Us
    rec.p99Us = w.p99Us
    rec.cpuUsPerReq = (cpu1 - cpu0) / w.requests
    rec.sysUsPerReq = (sys1 - sys0) / w.requests
    rec.threadsUsPerReq = threadDeltaPerReq(threads0, threads1, w.requests)
    rec.sutCoreShare = (cpu1 - cpu0) / wallUs
    rec.upstreamCoreShare = l.upstream === l.sut ? NaN : (up1 - up0) / wallUs
    rec.peakRssKiB = mem.hwm
    if (w.requests < common.connections) throw new Error(`only ${w.requests} responses in ${ctx.durationSec} s with ${common.connections} connections: too short a window for this load`)
    const errs = errorCount(w)
    if (errs > 0) throw new Error(`${errs} errors in the measured window (status ${w.statusErrors}, connect ${w.connectErrors}, read ${w.readErrors}, write ${w.writeErrors}, timeout ${w.timeouts})`)
    if (w.wrapped > 0) throw new Error(`the cold token file ran out (${ctx.pools.coldCount} tokens): raise --cold-tokens`)
    rec.ok = true
    await stop(l.sut)
    rec.logLinesPerReq = countLines(l.sut.logFile) / (w.requests + warm.requests)
    if (perf !== undefined && ctx.perfDir !== undefined) summarizePerf(perf, join(ctx.perfDir, `${String(seq).padStart(3, '0')}-${c.id}.txt`))
  } catch (err) {
    rec.error = err instanceof Error ? err.message : String(err)
  } finally {
    if (perf !== undefined) await stopPerf(perf)
    if (l !== undefined) {
      await stop(l.sut)
      await stop(l.upstream)
    }
    // decision logs of a run are tens of MB: keep only small logs
    for (const f of ['sut.log']) {
      const p = join(logDir, f)
      try { if (statSync(p).size > 1_000_000 && !ctx.verbose) rmSync(p) } catch {}
    }
    rmSync(join(logDir, 'data'), { recursive: true, force: true })
  }
  return rec
}
