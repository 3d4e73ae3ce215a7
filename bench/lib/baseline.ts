/**
 * Old and new in the same window (`--baseline DIR`): another checkout's gateway — a git
 * worktree of the last recorded commit — runs right beside each portcullis configuration,
 * the order of the two alternating by repetition, so both meet the same minute of a shared,
 * noisy machine. A figure recorded days earlier on another host is a weak baseline (bare's
 * own CPU per request moved 94 → 73 µs between two such runs); a pair seconds apart is not.
 *
 * The other checkout is built and configured by its own bench code (its gatewayCommand and
 * writeGatewayYaml), so each tree gets a gateway.yaml its own schema accepts.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import type { Config, RunRecord } from './configs.js'
import type { GatewayCommand, GatewayYamlOptions } from './portcullis.js'
import { bootstrapInterval, geometricMean, max, median, min } from './stats.js'
import { fmt } from './report.js'

export const BASELINE_SUFFIX = '@baseline'

export interface Baseline {
  root: string
  commit: string
  gateway: GatewayCommand
  writeYaml: (o: GatewayYamlOptions) => string
}

interface BaselineBench {
  gatewayCommand: (opts: { build: boolean }) => GatewayCommand | undefined
  writeGatewayYaml: (o: GatewayYamlOptions) => string
}

/** builds the other checkout's gateway (compiled, as the measured tree is) */
export async function loadBaseline (dir: string): Promise<Baseline> {
  const root = resolve(dir)
  const lib = join(root, 'bench/lib/portcullis.ts')
  if (!existsSync(lib)) throw new Error(`--baseline ${dir}: no bench/lib/portcullis.ts there (not a portcullis checkout with a benchmark)`)
  const bench = await import(pathToFileURL(lib).href) as BaselineBench
  const gateway = bench.gatewayCommand({ build: true })
  if (gateway === undefined || gateway.mode !== 'dist') throw new Error(`--baseline ${dir}: its gateway did not build (${gateway?.note ?? 'no src/cli.ts'})`)
  const rev = spawnSync('git', ['-C', root, 'rev-parse', '--short', 'HEAD'], { encoding: 'utf8' })
  return { root, commit: rev.stdout.trim() || '?', gateway, writeYaml: bench.writeGatewayYaml }
}

/** the baseline's twin of a configuration; undefined when the older gateway has no such feature */
export function twin (c: Config, database: string | undefined): Config | undefined {
  if (c.kind !== 'portcullis' || c.external === true || c.assertion === true) return undefined
  // a database of its own: the two trees' schemas (migrations) differ
  return { ...c, id: c.id + BASELINE_SUFFIX, baseline: true, database: database !== undefined ? 'bench_baseline' : undefined }
}

/** odd repetitions run the baseline first: a drift within the pair does not always favour one */
export function pairOrder (configs: readonly Config[], rep: number): Config[] {
  const out = [...configs]
  if (rep % 2 === 0) return out
  for (let i = 0; i + 1 < out.length; i++) {
    const a = out[i] as Config
    const b = out[i + 1] as Config
    if (b.baseline === true && b.id === a.id + BASELINE_SUFFIX) { out[i] = b; out[i + 1] = a; i++ }
  }
  return out
}

/**
 * New ÷ baseline per pair (same repetition, adjacent runs): by CPU (baseline's CPU µs/req ÷
 * this tree's, so below 1 means this tree costs more) and by throughput. By CPU, also the
 * geometric mean with its 95 % bootstrap interval, per configuration and for all pairs
 * together (configurations that share a code path pool into a figure with less noise).
 */
export function baselineTable (records: readonly RunRecord[], commit: string): string {
  const rows = ['| configuration | pairs | by CPU (min–max) | geometric mean (95 % interval) | CPU µs/req baseline → now | by throughput (min–max) | worse by CPU than 3 %? |', '|---|---:|---:|---:|---:|---:|---|']
  const ids = [...new Set(records.map((r) => r.id))].filter((id) => records.some((r) => r.id === id + BASELINE_SUFFIX))
  const all: Pairs = { cpu: [], thr: [], base: [], now: [] }
  for (const id of ids) {
    const pairs: Pairs = { cpu: [], thr: [], base: [], now: [] }
    for (const r of records.filter((x) => x.id === id && x.ok)) {
      const b = records.find((x) => x.id === id + BASELINE_SUFFIX && x.rep === r.rep && x.ok)
      if (b === undefined) continue
      for (const into of [pairs, all]) {
        into.cpu.push(b.cpuUsPerReq / r.cpuUsPerReq)
        into.thr.push(r.rps / b.rps)
        into.base.push(b.cpuUsPerReq)
        into.now.push(r.cpuUsPerReq)
      }
    }
    rows.push(pairRow(id, pairs))
  }
  if (ids.length > 1) rows.push(pairRow('all together', all))
  return [`Baseline: ${commit}, run beside each configuration in the same repetition (order alternating).`, '', ...rows].join('\n')
}

interface Pairs { cpu: number[], thr: number[], base: number[], now: number[] }

function pairRow (id: string, { cpu, thr, base, now }: Pairs): string {
  const m = median(cpu)
  const [lo, hi] = bootstrapInterval(cpu)
  return `| ${id} | ${cpu.length} | ${fmt(m, 3)} (${fmt(min(cpu), 2)}–${fmt(max(cpu), 2)}) | ${fmt(geometricMean(cpu), 3)} (${fmt(lo, 3)}–${fmt(hi, 3)}) | ${fmt(median(base), 1)} → ${fmt(median(now), 1)} | ${fmt(median(thr), 3)} (${fmt(min(thr), 2)}–${fmt(max(thr), 2)}) | ${Number.isFinite(m) ? (m < 0.97 ? 'yes' : 'no') : '–'} |`
}
