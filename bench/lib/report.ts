/** Turns run records into the summary: medians, paired ratios, markdown tables. */
import { max, median, min, nearest } from './stats.js'
import type { RunRecord } from './configs.js'

export interface Summary {
  id: string
  runs: number
  failed: number
  rps: number
  p50Ms: number
  p99Ms: number
  cpuUsPerReq: number
  peakRssMiB: number
  /** median of each run's throughput ÷ that of the nearest bare run */
  vsBare: number
  vsBareMin: number
  vsBareMax: number
  /** vsBare ÷ (direct's vsBare): the share of the upstream's own limit */
  vsDirect: number
  /** median of (nearest bare run's CPU µs/req ÷ this run's): the same ratio from CPU cost,
   *  which does not move when a neighbour takes part of the core away */
  vsBareCpu: number
  upstreamCoreShare: number
  sutCoreShare: number
  logLinesPerReq: number
  errors: string[]
}

export function summarize (records: readonly RunRecord[], order: readonly string[], anchorId = 'bare'): Summary[] {
  const anchors = records.filter((r) => r.id === anchorId && r.ok)
  const ratio = (r: RunRecord): number => {
    const a = nearest(r, anchors.filter((x) => x !== r))
    return a === undefined ? NaN : r.rps / a.rps
  }
  const cpuRatio = (r: RunRecord): number => {
    const a = nearest(r, anchors.filter((x) => x !== r))
    return a === undefined ? NaN : a.cpuUsPerReq / r.cpuUsPerReq
  }
  const directRatios = records.filter((r) => r.id === 'direct' && r.ok).map(ratio)
  const direct = median(directRatios)
  const out: Summary[] = []
  for (const id of order) {
    const all = records.filter((r) => r.id === id)
    if (all.length === 0) continue
    const ok = all.filter((r) => r.ok)
    const ratios = id === anchorId ? ok.map(() => 1) : ok.map(ratio).filter(Number.isFinite)
    const vsBare = median(ratios)
    out.push({
      id,
      runs: ok.length,
      failed: all.length - ok.length,
      rps: median(ok.map((r) => r.rps)),
      p50Ms: median(ok.map((r) => r.p50Us)) / 1000,
      p99Ms: median(ok.map((r) => r.p99Us)) / 1000,
      cpuUsPerReq: median(ok.map((r) => r.cpuUsPerReq)),
      peakRssMiB: median(ok.map((r) => r.peakRssKiB)) / 1024,
      vsBare,
      vsBareMin: min(ratios),
      vsBareMax: max(ratios),
      vsDirect: vsBare / direct,
      vsBareCpu: id === anchorId ? 1 : median(ok.map(cpuRatio).filter(Number.isFinite)),
      upstreamCoreShare: median(ok.map((r) => r.upstreamCoreShare).filter(Number.isFinite)),
      sutCoreShare: median(ok.map((r) => r.sutCoreShare)),
      logLinesPerReq: median(ok.map((r) => r.logLinesPerReq).filter(Number.isFinite)),
      errors: [...new Set(all.filter((r) => !r.ok).map((r) => r.error ?? 'failed'))],
    })
  }
  return out
}

const f = (x: number, digits = 0): string => Number.isFinite(x) ? x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }) : '–'

export function markdownTable (rows: readonly Summary[]): string {
  const lines = [
    '| configuration | req/s | ×bare (min–max) | ×direct | ×bare by CPU | p50 ms | p99 ms | CPU µs/req | peak RSS MiB | log lines/req | runs |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for (const s of rows) {
    const range = s.runs > 1 ? ` (${f(s.vsBareMin, 2)}–${f(s.vsBareMax, 2)})` : ''
    lines.push(`| ${s.id} | ${f(s.rps)} | ${f(s.vsBare, 2)}${range} | ${f(s.vsDirect, 2)} | ${f(s.vsBareCpu, 2)} | ${f(s.p50Ms, 2)} | ${f(s.p99Ms, 2)} | ${f(s.cpuUsPerReq, 1)} | ${f(s.peakRssMiB)} | ${f(s.logLinesPerReq, 2)} | ${s.runs}${s.failed > 0 ? ` (+${s.failed} failed)` : ''} |`)
  }
  return lines.join('\n')
}

export { f as fmt }
