/**
 * portcullis benchmark (issue 4): `npm run bench -- [--quick | --smoke | flags]`.
 * Method: the system under test alone on core 0, wrk (-t1 -c50) and the upstream on core 1;
 * every run starts fresh processes, checks them, warms up, then measures; configurations run
 * round-robin with `bare` re-run every few as the anchor; figures are medians of ratios paired
 * with the nearest bare run. See bench/README.md.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, release, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { measure, type Config, type Ctx, type RunRecord } from './lib/configs.js'
import { parseFlags, selected, USAGE, type Flags } from './lib/flags.js'
import { gatewayCommand, ROOT } from './lib/portcullis.js'
import { startPg, type PgCluster } from './lib/pg.js'
import { TokenPools } from './lib/pools.js'
import { freePort, stopAllSync, which } from './lib/proc.js'
import { summarize, type Summary } from './lib/report.js'
import { mergeResults, renderReport, type ReportData } from './lib/render.js'
import { line, runScaleCheck, type ScaleCheck, type ScaleResult } from './lib/scale.js'
import { runSessions, type SessionsResult } from './lib/sessions.js'
import { runStartup, type StartupResult } from './lib/startup.js'
import { runProfile, type ProfileResult } from './lib/profile.js'
import { ALGORITHMS, makeKeys, type Algorithm, type KeyMaterial } from './lib/tokens.js'
import { startBenchIdp, type BenchIdp } from './lib/idp.js'
import { BASELINE_SUFFIX, loadBaseline, pairOrder, twin, type Baseline } from './lib/baseline.js'

const BENCH = join(ROOT, 'bench')
const log = (s: string): void => { process.stderr.write(s + '\n') }

function preflight (flags: Flags): { nginx: boolean, notes: string[] } {
  const notes: string[] = []
  if (which('wrk') === undefined) {
    log('wrk is not installed: it is the load generator. Install it with `apt-get install -y wrk` (Debian/Ubuntu) and run again.')
    process.exit(2)
  }
  if (which('taskset') === undefined) notes.push('taskset missing (util-linux): processes are not pinned')
  const nginx = which('nginx') !== undefined
  if (!nginx) notes.push('nginx is not installed: the nginx configuration is skipped (`apt-get install -y nginx`)')
  if (!existsSync(join(BENCH, 'node_modules/fast-gateway')) || !existsSync(join(BENCH, 'node_modules/express-jwt'))) {
    log('installing the peers\' dependencies: npm install --prefix bench')
    const r = spawnSync('npm', ['install', '--prefix', BENCH, '--no-audit', '--no-fund', '--loglevel=error'], { stdio: ['ignore', 'inherit', 'inherit'] })
    if (r.status !== 0) { log('npm install --prefix bench failed'); process.exit(2) }
  }
  if (flags.smoke) notes.push('smoke mode: a subset, short runs — a check that everything starts and answers, not a measurement')
  return { nginx, notes }
}

function machine (): Record<string, string> {
  const v = (cmd: string, args: string[]): string => {
    const r = spawnSync(cmd, args, { encoding: 'utf8' })
    return (r.stdout + r.stderr).trim().split('\n')[0] ?? ''
  }
  return {
    cpu: `${cpus()[0]?.model ?? '?'} × ${cpus().length}`,
    memoryGiB: (totalmem() / 2 ** 30).toFixed(1),
    kernel: release(),
    node: process.version,
    wrk: v('wrk', ['-v']).replace(/ Copyright.*/, ''),
    nginx: which('nginx') !== undefined ? v('nginx', ['-v']) : 'absent',
    commit: v('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']),
    load: v('cat', ['/proc/loadavg']),
  }
}

/** bench/results/perf-STAMP/, made now: one summary per portcullis run (--perf) */
function perfDir (): string {
  if (which('perf') === undefined) throw new Error('--perf needs Linux perf (apt-get install linux-perf)')
  const dir = join(BENCH, 'results', `perf-${new Date().toISOString().replace(/[:.]/g, '-')}`)
  mkdirSync(dir, { recursive: true })
  log(`perf summaries: ${dir}`)
  return dir
}

/** --node-args, and what --perf needs: the JIT code's names in /tmp/perf-PID.map */
function nodeArgs (flags: Flags): string[] {
  return flags.perf ? ['--perf-basic-prof', ...flags.nodeArgs] : flags.nodeArgs
}

/** --node-args reach the scale checks' gateways too (base and variant), as the matrix's */
function withNodeArgs (sc: ScaleCheck, extra: string[]): ScaleCheck {
  if (extra.length === 0) return sc
  const add = (c: Config): Config => c.kind === 'portcullis' ? { ...c, nodeArgs: [...extra, ...(c.nodeArgs ?? [])] } : c
  return { ...sc, base: add(sc.base), variant: add(sc.variant) }
}

function mainConfigs (flags: Flags, hasNginx: boolean, hasGateway: boolean, database: string | undefined, baseline: boolean): Config[] {
  const extra = nodeArgs(flags)
  const list = matrixConfigs(flags, hasNginx, hasGateway, database)
    .map((c) => c.kind === 'portcullis' && extra.length > 0 ? { ...c, nodeArgs: [...extra, ...(c.nodeArgs ?? [])] } : c)
  if (!baseline) return list
  return list.flatMap((c) => { const t = twin(c, database); return t === undefined ? [c] : [c, t] })
}

function matrixConfigs (flags: Flags, hasNginx: boolean, hasGateway: boolean, database: string | undefined): Config[] {
  const asym: Algorithm[] = ['EdDSA', 'ES256', 'RS256']
  const list: Config[] = [{ id: 'direct', kind: 'direct' }]
  if (hasNginx) list.push({ id: 'nginx', kind: 'nginx' })
  if (hasGateway) {
    for (const alg of ALGORITHMS) list.push({ id: `portcullis-${alg}`, kind: 'portcullis', alg, database })
    list.push({ id: 'portcullis-EdDSA-no-decision-log', kind: 'portcullis', alg: 'EdDSA', database, noDecisionLog: true })
    list.push({ id: 'portcullis-HS256-cold', kind: 'portcullis', alg: 'HS256', cold: true, database })
    list.push({ id: 'portcullis-ES256-cold', kind: 'portcullis', alg: 'ES256', cold: true, database })
    // identity in from an identity provider (its RS256 tokens, keys by discovery → JWKS), and identity out (the signed assertion)
    list.push({ id: 'portcullis-external-RS256', kind: 'portcullis', alg: 'RS256', external: true, database })
    list.push({ id: 'portcullis-external-RS256-cold', kind: 'portcullis', alg: 'RS256', external: true, cold: true, database })
    list.push({ id: 'portcullis-EdDSA-assertion', kind: 'portcullis', alg: 'EdDSA', assertion: true, database })
  }
  // jsonwebtoken 9 (under express-jwt) cannot verify EdDSA
  for (const alg of [...asym.filter((a) => a !== 'EdDSA'), 'HS256' as const]) list.push({ id: `express-${alg}`, kind: 'express', alg })
  for (const alg of ALGORITHMS) list.push({ id: `fast-gateway-${alg}`, kind: 'fast-gateway', alg })
  if (flags.smoke) {
    const keep = new Set(['direct', 'portcullis-EdDSA', 'portcullis-HS256-cold', 'express-HS256', 'fast-gateway-EdDSA'])
    return list.filter((c) => keep.has(c.id))
  }
  return list.filter((c) => selected(flags, c.id))
}

/** round-robin, `bare` first, after every `every` configurations (never inside a baseline pair) and last */
function schedule (configs: readonly Config[], reps: number, every: number): Array<{ c: Config, rep: number }> {
  const bare: Config = { id: 'bare', kind: 'bare' }
  const out: Array<{ c: Config, rep: number }> = [{ c: bare, rep: 0 }]
  for (let rep = 0; rep < reps; rep++) {
    const order = pairOrder(configs, rep)
    let since = 0
    order.forEach((c, i) => {
      out.push({ c, rep })
      since++
      const next = order[i + 1]
      const inPair = next !== undefined && (next.baseline === true || c.baseline === true) && next.id.replace(BASELINE_SUFFIX, '') === c.id.replace(BASELINE_SUFFIX, '')
      if ((since >= every && !inPair) || next === undefined) { out.push({ c: bare, rep }); since = 0 }
    })
  }
  return out
}

async function main (): Promise<void> {
  const flags = parseFlags(process.argv.slice(2))
  if (flags.help) { process.stdout.write(USAGE); return }
  if (flags.render.length > 0) {
    process.stdout.write(renderReport(mergeResults(flags.render), flags.render.length > 1 ? flags.render.map((f) => f.replace(/^.*\//, '')).join(' + ') : undefined) + '\n')
    return
  }
  const pre = preflight(flags)
  const notes = [...pre.notes]
  const multiCore = cpus().length >= 2 && which('taskset') !== undefined
  if (!multiCore) notes.push('fewer than 2 cores or no taskset: nothing is pinned, figures are not comparable with pinned runs')
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  let pg: PgCluster | undefined
  let idp: BenchIdp | undefined
  const cleanup = (): void => {
    stopAllSync()
    pg?.stop()
    idp?.close().catch(() => {})
    if (!flags.verbose) rmSync(dir, { recursive: true, force: true })
  }
  process.once('SIGINT', () => { cleanup(); process.exit(130) })
  process.once('SIGTERM', () => { cleanup(); process.exit(143) })
  try {
    const t0 = Date.now()
    const gateway = gatewayCommand({ build: flags.build, entry: flags.gatewayEntry })
    if (gateway === undefined) notes.push('portcullis is not built yet (no src/cli.ts): its configurations are skipped')
    else notes.push(`portcullis runs as ${gateway.note}`)
    let baseline: Baseline | undefined
    if (flags.baseline !== undefined && gateway !== undefined) {
      baseline = await loadBaseline(flags.baseline)
      notes.push(`baseline: ${baseline.root} at ${baseline.commit}, ${baseline.gateway.note}, run beside each portcullis configuration it supports (\`${BASELINE_SUFFIX}\`)`)
    }

    // PostgreSQL for the portcullis runs (production mode), the 1M-jti check and sessions
    const needPg = gateway !== undefined && flags.store !== 'embedded' && !flags.smoke
    if (needPg) {
      const why: string[] = []
      pg = startPg(await freePort(), multiCore ? 1 : undefined, why)
      if (pg === undefined) {
        notes.push(`no PostgreSQL (${why.join('; ')}): portcullis runs use the embedded store; the 1M-jti and session checks are skipped`)
        if (flags.store === 'pg') throw new Error('--store pg but PostgreSQL could not be started')
      } else {
        pg.createDb('bench_main')
        if (flags.baseline !== undefined) pg.createDb('bench_baseline')
      }
    }
    const database = pg !== undefined ? 'bench_main' : undefined
    if (gateway !== undefined) notes.push(`portcullis session store: ${database !== undefined ? 'PostgreSQL (throwaway cluster on core 1, idle during proxy runs)' : 'embedded (PGlite)'}`)

    const keysDir = join(dir, 'keys')
    mkdirSync(keysDir)
    const keys = Object.fromEntries(ALGORITHMS.map((a) => [a, makeKeys(a, keysDir)])) as Record<Algorithm, KeyMaterial>
    // the stand-in identity provider of the external configurations (in this process: it is
    // asked once per gateway start, never on the request path)
    if (gateway !== undefined) idp = await startBenchIdp(dir)
    const bodyFile = join(dir, 'body-1MiB.bin')
    writeFileSync(bodyFile, Buffer.alloc(1024 * 1024, 'x'))
    const ctx: Ctx = {
      dir,
      sutCore: multiCore ? 0 : undefined,
      loadCore: multiCore ? 1 : undefined,
      keys,
      pools: new TokenPools(dir, keys, flags.coldTokens),
      gateway,
      pg,
      idp,
      bodyFile,
      warmupSec: flags.warmupSec,
      durationSec: flags.durationSec,
      verbose: flags.verbose,
      baseline,
      perfDir: flags.perf ? perfDir() : undefined,
      perfKeep: flags.perfKeep,
    }
    if (idp !== undefined) ctx.pools.external = { keys: idp.keys, issuer: idp.issuer, audience: idp.audience, kid: idp.kid }
    let seq = 0
    const nextSeq = (): number => seq++

    // 1. the matrix
    const records: RunRecord[] = []
    let summary: Summary[] = []
    const configs = mainConfigs(flags, pre.nginx, gateway !== undefined, database, baseline !== undefined)
    if (!flags.skip.has('matrix')) {
      const plan = schedule(configs, flags.reps, 3)
      const est = plan.length * (flags.warmupSec + flags.durationSec + 2)
      log(`matrix: ${configs.length} configurations + bare anchor, ${flags.reps} repetition(s), ${plan.length} runs, ~${Math.round(est / 60)} min`)
      log(`configurations: ${['bare', ...configs.map((c) => c.id)].join(', ')}`)
      for (const { c, rep } of plan) {
        const r = await measure(c, ctx, nextSeq(), rep)
        records.push(r)
        log(line(r))
      }
      summary = summarize(records, ['direct', 'nginx', 'bare', ...configs.map((c) => c.id).filter((id) => id !== 'direct' && id !== 'nginx')])
      const externalRuns = records.filter((r) => r.id.startsWith('portcullis-external-')).length
      if (idp !== undefined && externalRuns > 0) {
        notes.push(`stand-in IdP: ${idp.hits.get('/.well-known/openid-configuration') ?? 0} discovery and ${idp.hits.get('/jwks') ?? 0} JWKS requests over ${externalRuns} external run(s) (one each per gateway start: none on the request path)`)
      }
    }

    // 2. scale checks
    const scale: ScaleResult[] = []
    if (!flags.skip.has('scale') && gateway !== undefined) {
      for (const sc of await scaleChecks(ctx, database, notes)) {
        if ('skipped' in sc) { scale.push(sc.skipped); continue }
        if (!selected(flags, sc.variant.id)) continue
        log(`scale check: ${sc.name}`)
        scale.push(await runScaleCheck(withNodeArgs(sc, nodeArgs(flags)), ctx, flags.scaleReps, nextSeq, log))
      }
    }

    // 3. sessions, 4. startup, CPU profile
    let sessions: SessionsResult | undefined
    if (!flags.skip.has('sessions') && gateway !== undefined) {
      log('sessions: login/s and refresh/s against PostgreSQL')
      sessions = await runSessions(ctx, flags, log)
    }
    let startup: StartupResult[] = []
    if (!flags.skip.has('startup') && gateway !== undefined) {
      log('startup time and idle RSS')
      startup = await runStartup(ctx, flags, log)
    }
    let profile: ProfileResult | undefined
    if (flags.profile && gateway !== undefined) {
      log(`CPU profile of ${flags.profileCold ? 'portcullis-HS256-cold' : 'portcullis-EdDSA'} under load`)
      profile = await runProfile(ctx, database, log, flags.profileCold)
    }

    // report
    const data: ReportData = {
      takenAt: new Date().toISOString(),
      machine: machine(),
      flags,
      notes,
      records,
      scale,
      sessions,
      startup,
      profile,
      totalSec: (Date.now() - t0) / 1000,
      mintSec: ctx.pools.mintSec,
      ...(baseline !== undefined ? { baselineCommit: baseline.commit } : {}),
    }
    const text = renderReport(data)
    process.stdout.write(text + '\n')

    const resultsDir = join(BENCH, 'results')
    mkdirSync(resultsDir, { recursive: true })
    const stamp = new Date().toISOString().replace(/[:.]/g, '-')
    const json = { ...data, flags: { ...flags, skip: [...flags.skip] }, summary }
    const name = flags.smoke ? 'smoke' : flags.quick ? 'quick' : 'full'
    writeFileSync(join(resultsDir, `${name}-${stamp}.json`), JSON.stringify(json, null, 2))
    writeFileSync(join(resultsDir, `${name}-latest.json`), JSON.stringify(json, null, 2))
    writeFileSync(join(resultsDir, `${name}-latest.md`), text + '\n')
    log(`results: bench/results/${name}-${stamp}.json (and ${name}-latest.{json,md})`)
    const anyFailed = records.some((r) => !r.ok) || scale.some((s) => s.errors.length > 0)
    if (flags.smoke) log(`smoke: ran ${['bare', ...configs.map((c) => c.id)].join(', ')}${anyFailed ? ' — SOME RUNS FAILED' : ' — all passed'}`)
    if (anyFailed) process.exitCode = 1
  } finally {
    cleanup()
  }
}

/** the scale-check pairs; a check that cannot run here comes back as `skipped` */
async function scaleChecks (ctx: Ctx, database: string | undefined, notes: string[]): Promise<Array<ScaleCheck | { skipped: ScaleResult }>> {
  const base: Config = { id: 'portcullis-EdDSA', kind: 'portcullis', alg: 'EdDSA', database }
  const skipped = (name: string, why: string): { skipped: ScaleResult } => ({ skipped: { name, note: '', pairs: 0, ratio: NaN, ratioMin: NaN, ratioMax: NaN, baseRps: NaN, variantRps: NaN, baseP50Ms: NaN, variantP50Ms: NaN, addedP50Us: NaN, baseP99Ms: NaN, variantP99Ms: NaN, baseRssMiB: NaN, variantRssMiB: NaN, skipped: why, errors: [], records: [] } })
  const out: Array<ScaleCheck | { skipped: ScaleResult }> = []
  const deny = await prepareDenylist(ctx, notes)
  out.push(deny === undefined
    ? skipped('1,000,000 denylisted jtis', notes.at(-1) ?? 'no mechanism to load a denylist')
    : {
        name: '1,000,000 denylisted jtis',
        base,
        variant: { id: 'portcullis-EdDSA-1M-jtis', kind: 'portcullis', alg: 'EdDSA', database: deny.database, revokedJti: deny.revokedJti },
        note: 'with ÷ without 1M live jti entries (rows in `revocations`, loaded at start); a denylisted token is checked to get 401',
      })
  out.push({
    name: '10,000 routes',
    base,
    variant: { id: 'portcullis-EdDSA-10k-routes', kind: 'portcullis', alg: 'EdDSA', database, extraRoutes: 10_000 },
    note: 'with ÷ without 10,000 routes /r0…/r9999 listed before the route hit',
  })
  out.push({
    name: '1 MB request + response bodies',
    base: { id: 'bare-1MB', kind: 'bare', bigBody: true },
    variant: { id: 'portcullis-EdDSA-1MB', kind: 'portcullis', alg: 'EdDSA', database, bigBody: true },
    note: 'portcullis ÷ bare, a 1 MiB POST body to the upstream (portcullis reads it whole first, requestBuffering; bare streams it) and its 1 MiB echo back',
    bodyBytes: 1024 * 1024,
    reference: { id: 'direct-1MB', kind: 'direct', bigBody: true },
  })
  out.push({
    name: '1,000 concurrent connections',
    base,
    variant: { ...base, id: 'portcullis-EdDSA-c1000', connections: 1000 },
    note: 'wrk -c1000 ÷ wrk -c50, same gateway',
  })
  out.push({
    name: 'one connection',
    base: { id: 'bare-c1', kind: 'bare', connections: 1 },
    variant: { ...base, id: 'portcullis-EdDSA-c1', connections: 1 },
    note: 'portcullis ÷ bare, both under wrk -c1 (one request at a time): the latency auth adds is p50 with − p50 without',
  })
  return out
}

/**
 * Loads 1,000,000 jti rows into the `revocations` table of a second database; the gateway
 * rebuilds its in-memory denylist from it at start. Needs PostgreSQL and the sessions work.
 */
async function prepareDenylist (ctx: Ctx, notes: string[]): Promise<{ database: string, revokedJti: string } | undefined> {
  if (ctx.pg === undefined) { notes.push('1M-jti check skipped: needs PostgreSQL (the denylist is loaded from its `revocations` table)'); return undefined }
  const db = 'bench_denylist'
  ctx.pg.createDb(db)
  // the gateway creates its tables (migrations) at start: run it once against the database
  const probe = await measureStartOnly(ctx, db)
  if (probe !== undefined) { notes.push(`1M-jti check skipped: the gateway did not start against PostgreSQL: ${probe}`); return undefined }
  const has = ctx.pg.psql(db, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'revocations'")
  if (has !== '1') { notes.push('1M-jti check skipped: no `revocations` table after the gateway started (migrations not run at start?)'); return undefined }
  const cols = ctx.pg.psql(db, "SELECT string_agg(column_name, ',') FROM information_schema.columns WHERE table_name = 'revocations'")
  const t0 = Date.now()
  ctx.pg.psql(db, `INSERT INTO revocations (kind, value, expires_at, created_at)
    SELECT 'jti', 'bench-revoked-' || g, now() + interval '2 hours', now() FROM generate_series(1, 1000000) g`)
  notes.push(`1M-jti check: 1,000,000 rows inserted into revocations(${cols}) in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  return { database: db, revokedJti: 'bench-revoked-777777' }
}

/** starts portcullis once against `database` (to run its migrations) and stops it; an error message or undefined */
async function measureStartOnly (ctx: Ctx, database: string): Promise<string | undefined> {
  const { startGatewayOnce } = await import('./lib/startup.js')
  try {
    await startGatewayOnce(ctx, database)
    return undefined
  } catch (err) {
    return err instanceof Error ? err.message.split('\n').slice(0, 6).join(' | ') : String(err)
  }
}

main().catch((err: unknown) => {
  stopAllSync()
  log(err instanceof Error ? (err.stack ?? err.message) : String(err))
  process.exit(1)
})
