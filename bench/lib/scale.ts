/**
 * Scale checks: each a pair (the gateway without the load, the gateway with it), run
 * alternately; the figure is the median of variant ÷ the base run just before it.
 */
import { measure, type Config, type Ctx, type RunRecord } from './configs.js'
import { max, median, min } from './stats.js'
import { fmt } from './report.js'

export interface ScaleCheck {
  name: string
  base: Config
  variant: Config
  /** what the ratio means, for the table */
  note: string
  /** bytes per request and response, for MB/s */
  bodyBytes?: number
  /** run once per repetition for context (e.g. the upstream alone), shown beside the ratio */
  reference?: Config
}

export interface ScaleResult {
  name: string
  note: string
  pairs: number
  ratio: number
  ratioMin: number
  ratioMax: number
  baseRps: number
  variantRps: number
  baseP50Ms: number
  variantP50Ms: number
  /** median over pairs of the variant's p50 − its base's p50: the latency the variant adds */
  addedP50Us: number
  baseP99Ms: number
  variantP99Ms: number
  baseRssMiB: number
  variantRssMiB: number
  variantMBps?: number
  referenceId?: string
  referenceRps?: number
  skipped?: string
  errors: string[]
  records: RunRecord[]
}

export async function runScaleCheck (sc: ScaleCheck, ctx: Ctx, reps: number, nextSeq: () => number, log: (s: string) => void): Promise<ScaleResult> {
  const records: RunRecord[] = []
  const ratios: number[] = []
  const addedP50: number[] = []
  for (let rep = 0; rep < reps; rep++) {
    const b = await measure(sc.base, ctx, nextSeq(), rep)
    log(line(b))
    const v = await measure(sc.variant, ctx, nextSeq(), rep)
    log(line(v))
    records.push(b, v)
    if (sc.reference !== undefined) {
      const r = await measure(sc.reference, ctx, nextSeq(), rep)
      log(line(r))
      records.push(r)
    }
    if (b.ok && v.ok) {
      ratios.push(v.rps / b.rps)
      addedP50.push(v.p50Us - b.p50Us)
    }
  }
  const ok = (id: string): RunRecord[] => records.filter((r) => r.ok && r.id === id)
  const variantRps = median(ok(sc.variant.id).map((r) => r.rps))
  return {
    name: sc.name,
    note: sc.note,
    pairs: ratios.length,
    ratio: median(ratios),
    ratioMin: min(ratios),
    ratioMax: max(ratios),
    baseRps: median(ok(sc.base.id).map((r) => r.rps)),
    variantRps,
    baseP50Ms: median(ok(sc.base.id).map((r) => r.p50Us)) / 1000,
    variantP50Ms: median(ok(sc.variant.id).map((r) => r.p50Us)) / 1000,
    addedP50Us: median(addedP50),
    baseP99Ms: median(ok(sc.base.id).map((r) => r.p99Us)) / 1000,
    variantP99Ms: median(ok(sc.variant.id).map((r) => r.p99Us)) / 1000,
    baseRssMiB: median(ok(sc.base.id).map((r) => r.peakRssKiB)) / 1024,
    variantRssMiB: median(ok(sc.variant.id).map((r) => r.peakRssKiB)) / 1024,
    ...(sc.bodyBytes !== undefined ? { variantMBps: variantRps * sc.bodyBytes / 1e6 } : {}),
    ...(sc.reference !== undefined ? { referenceId: sc.reference.id, referenceRps: median(ok(sc.reference.id).map((r) => r.rps)) } : {}),
    errors: [...new Set(records.filter((r) => !r.ok).map((r) => `${r.id}: ${r.error ?? 'failed'}`))],
    records,
  }
}

/** the JS thread's part and the largest other thread groups, e.g. ", main 52.1, node 3.4" (Node 20 names its helpers "node") */
function threadsPart (r: RunRecord): string {
  const t = r.threadsUsPerReq
  if (t === undefined) return ''
  const helpers = Object.entries(t).filter(([name]) => name !== 'main').sort((a, b) => b[1] - a[1]).slice(0, 3)
  return `, main ${fmt(t.main ?? NaN, 1)}${helpers.map(([name, us]) => `, ${name} ${fmt(us, 1)}`).join('')}`
}

export function line (r: RunRecord): string {
  if (!r.ok) return `  ${r.id.padEnd(28)} FAILED: ${r.error ?? ''}`
  return `  ${r.id.padEnd(28)} ${fmt(r.rps).padStart(8)} req/s  p50 ${fmt(r.p50Us / 1000, 2)} ms  p99 ${fmt(r.p99Us / 1000, 2)} ms  ${fmt(r.cpuUsPerReq, 1)} µs/req (sys ${fmt(r.sysUsPerReq ?? NaN, 1)}${threadsPart(r)})  RSS ${fmt(r.peakRssKiB / 1024)} MiB  SUT core ${fmt(r.sutCoreShare * 100)}%  upstream core ${fmt(r.upstreamCoreShare * 100)}%`
}

export function scaleTable (rows: readonly ScaleResult[]): string {
  const lines = [
    '| check | ratio (min–max) | base req/s | with load req/s | p50 ms base → load | p99 ms base → load | peak RSS MiB base → load | what the ratio is |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
  ]
  for (const r of rows) {
    if (r.skipped !== undefined) { lines.push(`| ${r.name} | skipped | | | | | | ${r.skipped} |`); continue }
    const range = r.pairs > 1 ? ` (${fmt(r.ratioMin, 2)}–${fmt(r.ratioMax, 2)})` : ''
    const mbps = r.variantMBps !== undefined ? ` (${fmt(r.variantMBps)} MB/s each way)` : ''
    const ref = r.referenceId !== undefined ? ` (${r.referenceId}: ${fmt(r.referenceRps ?? NaN)} req/s)` : ''
    lines.push(`| ${r.name} | ${fmt(r.ratio, 3)}${range} | ${fmt(r.baseRps)} | ${fmt(r.variantRps)}${mbps} | ${fmt(r.baseP50Ms, 3)} → ${fmt(r.variantP50Ms, 3)} | ${fmt(r.baseP99Ms, 2)} → ${fmt(r.variantP99Ms, 2)} | ${fmt(r.baseRssMiB)} → ${fmt(r.variantRssMiB)} | ${r.note}${ref} |`)
  }
  return lines.join('\n')
}
