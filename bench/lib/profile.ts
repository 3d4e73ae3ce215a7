/**
 * A CPU profile of portcullis under the EdDSA load (or the cold HS256 one) (`node --cpu-prof`), summarized by self
 * time per function and per package. The profile covers the whole process (start, checks,
 * warm-up, measure); shares are of the non-idle samples.
 */
import { mkdirSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { measure, type Ctx, type RunRecord } from './configs.js'
import { fmt } from './report.js'

interface ProfileNode {
  id: number
  callFrame: { functionName: string, url: string, lineNumber: number, columnNumber: number }
  children?: number[]
}
interface CpuProfile { nodes: ProfileNode[], samples: number[], timeDeltas: number[] }

export interface ProfileEntry { name: string, where: string, selfMs: number, share: number }
export interface ProfileResult {
  file: string
  run: RunRecord
  busyMs: number
  idleMs: number
  top: ProfileEntry[]
  byArea: ProfileEntry[]
  table: string
}

const IDLE = new Set(['(idle)', '(program)'])

function area (url: string, fn: string): string {
  if (url === '') return fn.startsWith('(') ? fn : '(native)'
  const nm = url.lastIndexOf('/node_modules/')
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/')
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? url)
  }
  if (url.startsWith('node:')) return `node:${url.slice(5).split('/')[0] ?? ''}`
  const m = /\/(src|plugins|config|dist)\/(.*)$/.exec(url)
  if (m !== null) return `portcullis ${m[1] === 'dist' ? '' : m[1] + '/'}${m[2] ?? ''}`.replace(/\.(js|ts)$/, '')
  return url
}

export function summarizeProfile (p: CpuProfile, topN = 25): { busyMs: number, idleMs: number, top: ProfileEntry[], byArea: ProfileEntry[] } {
  const byId = new Map(p.nodes.map((n) => [n.id, n]))
  const selfUs = new Map<number, number>()
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0))
  }
  const fns = new Map<string, ProfileEntry>()
  const areas = new Map<string, ProfileEntry>()
  let busy = 0
  let idle = 0
  for (const [id, us] of selfUs) {
    const n = byId.get(id)
    if (n === undefined) continue
    const { functionName, url, lineNumber } = n.callFrame
    const name = functionName === '' ? '(anonymous)' : functionName
    if (IDLE.has(name)) { idle += us; continue }
    busy += us
    const where = url === '' ? '' : `${url.replace(/^.*\/node_modules\//, '').replace(/^file:\/\/.*\/(src|plugins|config|dist)\//, '$1/')}:${lineNumber + 1}`
    const key = `${name}@${where}`
    const e = fns.get(key) ?? { name, where, selfMs: 0, share: 0 }
    e.selfMs += us / 1000
    fns.set(key, e)
    const a = area(url, name)
    const ae = areas.get(a) ?? { name: a, where: '', selfMs: 0, share: 0 }
    ae.selfMs += us / 1000
    areas.set(a, ae)
  }
  const finish = (m: Map<string, ProfileEntry>, n: number): ProfileEntry[] => [...m.values()]
    .map((e) => ({ ...e, share: e.selfMs / (busy / 1000) }))
    .sort((a, b) => b.selfMs - a.selfMs)
    .slice(0, n)
  return { busyMs: busy / 1000, idleMs: idle / 1000, top: finish(fns, topN), byArea: finish(areas, 15) }
}

export async function runProfile (ctx: Ctx, database: string | undefined, log: (s: string) => void, cold = false): Promise<ProfileResult | undefined> {
  const profDir = join(ctx.dir, 'cpu-prof')
  mkdirSync(profDir, { recursive: true })
  // a longer measured window, so that start-up and warm-up weigh little in the whole-process profile
  const run = await measure({ id: cold ? 'portcullis-HS256-cold-profiled' : 'portcullis-EdDSA-profiled', kind: 'portcullis', alg: cold ? 'HS256' : 'EdDSA', cold, database, nodeArgs: ['--cpu-prof', '--cpu-prof-dir', profDir] }, { ...ctx, durationSec: Math.max(ctx.durationSec, 15) }, 999, 0)
  const files = readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'))
  if (files.length === 0) { log(`  no .cpuprofile written (did the gateway exit cleanly on SIGTERM?) ${run.error ?? ''}`); return undefined }
  const file = join(profDir, files[0] as string)
  const s = summarizeProfile(JSON.parse(readFileSync(file, 'utf8')) as CpuProfile)
  const usPerReq = run.cpuUsPerReq
  const row = (e: ProfileEntry): string => `| ${e.name} | ${e.where} | ${fmt(e.share * 100, 1)} % | ${Number.isFinite(usPerReq) ? fmt(e.share * usPerReq, 1) : '–'} |`
  const table = [
    `Profiled run: ${fmt(run.rps)} req/s, ${fmt(usPerReq, 1)} µs CPU/req under --cpu-prof (the profiler itself costs some throughput). Busy ${fmt(s.busyMs)} ms, idle ${fmt(s.idleMs)} ms of samples; µs/req column = share × CPU µs/req.`,
    '',
    '| package / area | | share of busy | ≈ µs/req |',
    '|---|---|---:|---:|',
    ...s.byArea.map(row),
    '',
    '| function (self time) | where | share of busy | ≈ µs/req |',
    '|---|---|---:|---:|',
    ...s.top.map(row),
  ].join('\n')
  log(table)
  return { file, run, ...s, table }
}
