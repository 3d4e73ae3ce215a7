/**
 * Startup time (spawn → GET /readyz 200 on the admin listener) and idle RSS (VmRSS one
 * second after ready) of the gateway, in PostgreSQL mode and embedded (PGlite) mode, on a
 * new store (first start: migrations, PGlite creates its data directory) and on a restart.
 */
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Ctx } from './configs.js'
import type { Flags } from './flags.js'
import { writeGatewayYaml } from './portcullis.js'
import { freePort, memKiB, start, stop, waitUntil } from './proc.js'
import { median } from './stats.js'
import { fmt } from './report.js'

export interface StartupResult {
  mode: string
  runs: number
  readyMs: number
  idleRssMiB: number
  peakRssMiB: number
  error?: string
}

let serial = 0

/** starts the gateway, waits for /readyz, returns timings and memory, stops it */
export async function startGatewayOnce (ctx: Ctx, database: string | undefined, dataDir?: string, idleMs = 0): Promise<{ readyMs: number, rssKiB: number, hwmKiB: number }> {
  if (ctx.gateway === undefined) throw new Error('no gateway')
  const dir = join(ctx.dir, 'startup', String(serial++))
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const adminPort = await freePort()
  const file = writeGatewayYaml({
    file: join(dir, 'gateway.yaml'),
    port,
    adminPort,
    upstream: 'http://127.0.0.1:9',
    keys: ctx.keys.EdDSA,
    databaseUrl: database !== undefined && ctx.pg !== undefined ? ctx.pg.url(database) : '',
    dataDir: dataDir ?? join(dir, 'data'),
  })
  const g = ctx.gateway
  const p = start({ name: 'portcullis', core: ctx.sutCore, cmd: g.cmd, args: g.args(file), env: { ...process.env, NODE_ENV: 'production' }, logFile: join(dir, 'gateway.log') })
  try {
    const readyAt = await waitUntil(p, async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200, 120_000)
    const readyMs = readyAt - p.spawnedAtMs
    if (idleMs > 0) await sleep(idleMs)
    const mem = memKiB(p.pid)
    return { readyMs, rssKiB: mem.rss, hwmKiB: mem.hwm }
  } finally {
    await stop(p, 10_000)
  }
}

export async function runStartup (ctx: Ctx, flags: Flags, log: (s: string) => void): Promise<StartupResult[]> {
  const reps = flags.smoke ? 1 : Math.min(3, Math.max(1, flags.reps))
  const out: StartupResult[] = []
  const modes: Array<{ mode: string, run: (rep: number) => Promise<{ readyMs: number, rssKiB: number, hwmKiB: number }> }> = []
  const embeddedDirs: string[] = []
  modes.push({
    mode: 'embedded (PGlite), new data directory',
    run: async (rep) => {
      const d = join(ctx.dir, 'startup', `embedded-${rep}`)
      embeddedDirs[rep] = d
      return await startGatewayOnce(ctx, undefined, d, 1000)
    },
  })
  modes.push({ mode: 'embedded (PGlite), restart on existing data', run: async (rep) => await startGatewayOnce(ctx, undefined, embeddedDirs[rep], 1000) })
  if (ctx.pg !== undefined && !flags.smoke) {
    const pg = ctx.pg
    modes.push({
      mode: 'PostgreSQL, new database (migrations)',
      run: async (rep) => { pg.createDb(`bench_startup_${rep}`); return await startGatewayOnce(ctx, `bench_startup_${rep}`, undefined, 1000) },
    })
    modes.push({ mode: 'PostgreSQL, restart', run: async (rep) => await startGatewayOnce(ctx, `bench_startup_${rep}`, undefined, 1000) })
  }
  for (const m of modes) {
    const rs: Array<{ readyMs: number, rssKiB: number, hwmKiB: number }> = []
    let error: string | undefined
    for (let rep = 0; rep < reps; rep++) {
      try { rs.push(await m.run(rep)) } catch (err) { error = err instanceof Error ? err.message.split('\n').slice(0, 8).join(' | ') : String(err) }
    }
    const r: StartupResult = {
      mode: m.mode,
      runs: rs.length,
      readyMs: median(rs.map((x) => x.readyMs)),
      idleRssMiB: median(rs.map((x) => x.rssKiB)) / 1024,
      peakRssMiB: median(rs.map((x) => x.hwmKiB)) / 1024,
      ...(error !== undefined ? { error } : {}),
    }
    log(`  ${m.mode}: ready in ${fmt(r.readyMs)} ms, idle RSS ${fmt(r.idleRssMiB)} MiB, peak ${fmt(r.peakRssMiB)} MiB${error !== undefined ? ` — error: ${error}` : ''}`)
    out.push(r)
  }
  return out
}

export function startupTable (rows: readonly StartupResult[]): string {
  const lines = ['| mode | spawn → ready ms | idle RSS MiB | peak RSS MiB during start | runs |', '|---|---:|---:|---:|---:|']
  for (const r of rows) lines.push(`| ${r.mode} | ${fmt(r.readyMs)} | ${fmt(r.idleRssMiB)} | ${fmt(r.peakRssMiB)} | ${r.runs}${r.error !== undefined ? ` (error: ${r.error.slice(0, 120)})` : ''} |`)
  return lines.join('\n')
}
