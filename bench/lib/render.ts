/**
 * The markdown report, from the data a run saves (so `--render FILE[,FILE…]` can redraw it,
 * or merge a full run with a later run of some sections).
 */
import { readFileSync } from 'node:fs'
import type { RunRecord } from './configs.js'
import type { ProfileResult } from './profile.js'
import { markdownTable, summarize } from './report.js'
import { scaleTable, type ScaleResult } from './scale.js'
import { sessionsTable, type SessionsResult } from './sessions.js'
import { startupTable, type StartupResult } from './startup.js'
import { targetsTable } from './targets.js'
import { BASELINE_SUFFIX, baselineTable } from './baseline.js'

export interface ReportData {
  takenAt: string
  machine: Record<string, string>
  flags: { reps: number, durationSec: number, warmupSec: number, smoke: boolean }
  notes: string[]
  records: RunRecord[]
  scale: ScaleResult[]
  sessions: SessionsResult | undefined
  startup: StartupResult[]
  profile: ProfileResult | undefined
  totalSec?: number
  mintSec?: number
  /** the --baseline checkout's commit, when one ran beside the portcullis configurations */
  baselineCommit?: string
}

export function summaryOrder (records: readonly RunRecord[]): string[] {
  const ids = [...new Set(records.map((r) => r.id))]
  const first = ['direct', 'nginx', 'bare'].filter((id) => ids.includes(id))
  return [...first, ...ids.filter((id) => !first.includes(id))]
}

export function renderReport (d: ReportData, sources?: string): string {
  const m = d.machine
  const summary = summarize(d.records, summaryOrder(d.records))
  const md = [
    `## portcullis benchmark — ${d.takenAt.slice(0, 16).replace('T', ' ')} UTC`,
    '',
    `Machine: ${m.cpu ?? ''}, ${m.memoryGiB ?? ''} GiB, Linux ${m.kernel ?? ''}, Node ${m.node ?? ''}, ${m.wrk ?? ''}, ${m.nginx ?? ''}; commit ${m.commit ?? ''}; load before: ${m.load ?? ''}.`,
    `Method: system under test on core 0, wrk -t1 -c50 and the upstream on core 1; ${d.flags.reps} repetition(s) × ${d.flags.durationSec} s after ${d.flags.warmupSec} s warm-up, fresh processes per run; ×bare = median of ratios to the nearest bare run (throughput; "by CPU" = bare's CPU µs/req ÷ this one's).`,
    ...(sources !== undefined ? [`Merged from: ${sources}.`] : []),
    '',
    ...d.notes.map((n) => `- ${n}`),
    '',
  ]
  if (summary.length > 0) md.push('### Throughput, latency, CPU', '', markdownTable(summary), '')
  const failures = summary.filter((s) => s.errors.length > 0)
  if (failures.length > 0) md.push('Failed runs:', ...failures.map((s) => `- ${s.id}: ${s.errors.join(' / ')}`), '')
  if (d.records.some((r) => r.id.endsWith(BASELINE_SUFFIX))) md.push('### This tree ÷ the baseline, paired', '', baselineTable(d.records, d.baselineCommit ?? '?'), '')
  if (d.scale.length > 0) md.push('### Scale checks', '', scaleTable(d.scale), '')
  if (summary.length > 0 && !d.flags.smoke) md.push('### Targets (issue 4)', '', targetsTable(summary, d.scale), '')
  if (d.sessions !== undefined) md.push('### Session endpoints (PostgreSQL)', '', sessionsTable(d.sessions), '')
  if (d.startup.length > 0) md.push('### Startup', '', startupTable(d.startup), '')
  if (d.profile !== undefined) md.push(`### Where the microseconds go (${d.profile.run.id.replace('-profiled', '')}, self time)`, '', d.profile.table, '')
  if (d.totalSec !== undefined) md.push(`Total time ${Math.round(d.totalSec)} s (token minting ${Math.round(d.mintSec ?? 0)} s).`)
  return md.join('\n')
}

/** later files replace earlier ones section by section (a skipped scale check never replaces a measured one) */
export function mergeResults (files: readonly string[]): ReportData {
  let out: ReportData | undefined
  for (const f of files) {
    const d = JSON.parse(readFileSync(f, 'utf8')) as ReportData
    d.takenAt ??= new Date().toISOString()
    if (out === undefined) { out = d; continue }
    if (d.records.length > 0) out.records = d.records
    for (const s of d.scale) {
      const i = out.scale.findIndex((x) => x.name === s.name)
      if (s.skipped !== undefined && i >= 0) continue
      if (i >= 0) out.scale[i] = s
      else out.scale.push(s)
    }
    if (d.sessions !== undefined && (d.sessions.skipped === undefined || out.sessions === undefined)) out.sessions = d.sessions
    if (d.startup.length > 0) out.startup = d.startup
    if (d.profile !== undefined && d.profile !== null) out.profile = d.profile
    out.notes = [...out.notes, ...d.notes.filter((n) => !out?.notes.includes(n)).map((n) => `(${f.replace(/^.*\//, '')}) ${n}`)]
    out.totalSec = undefined
  }
  if (out === undefined) throw new Error('--render needs at least one results file')
  return out
}
