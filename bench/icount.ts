/**
 * Instructions per proxied request, counted by valgrind: a CPU figure the machine's load does
 * not move. These VMs have no hardware counters, and their speed drifts ±30 % between minutes,
 * so a wall-clock CPU difference of a few percent between two trees needs dozens of pairs to
 * resolve (README, "Old and new"). Valgrind runs the gateway on a simulated CPU and counts
 * every instruction it executes, on every thread; the same request counts the same within
 * ±1.5 % run to run, whatever else the machine does (the approach of CodSpeed and of rustc's
 * perf.rust-lang.org). What it does not see: time in the kernel (the syscalls per request are
 * the same in both trees, README) and the hardware's own cache and branch behaviour, which
 * `--sim` models (valgrind's cache and branch simulators, ~2× slower).
 *
 *   apt-get install -y valgrind
 *   node --import tsx bench/icount.ts --baseline /tmp/old            # this tree and another, alternating
 *   node --import tsx bench/icount.ts --configs HS256,EdDSA-no-decision-log --reps 3 --sim
 *
 * Each measurement: a throwaway PostgreSQL (once), the bench upstream, the gateway under
 * `valgrind --tool=callgrind --instr-atstart=no`, a warm-up with instrumentation off (the
 * JIT and the verify cache settle: a warm pool's tokens are each sent twice), then
 * `callgrind_control -i on`, N requests from `--conns` keep-alive connections, and a dump.
 * Cold configurations send every token once (each a verification miss).
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import { Pool } from 'undici'
import { loadBaseline } from './lib/baseline.js'
import { startPg, type PgCluster } from './lib/pg.js'
import { gatewayCommand, writeGatewayYaml, API_PATH, type GatewayCommand, type GatewayYamlOptions } from './lib/portcullis.js'
import { freePort, start, stop, stopAllSync, waitUntil, which } from './lib/proc.js'
import { geometricMean, median } from './lib/stats.js'
import { makeKeys, mintTokens, type Algorithm, type KeyMaterial } from './lib/tokens.js'

interface IConfig { id: string, alg: Algorithm, decisions: boolean, cold: boolean }
const CONFIGS: IConfig[] = [
  ...(['EdDSA', 'ES256', 'RS256', 'HS256'] as const).map(alg => ({ id: alg, alg, decisions: true, cold: false })),
  { id: 'EdDSA-no-decision-log', alg: 'EdDSA', decisions: false, cold: false },
  { id: 'HS256-cold', alg: 'HS256', decisions: true, cold: true },
  { id: 'ES256-cold', alg: 'ES256', decisions: true, cold: true },
]

const { values: o } = parseArgs({
  options: {
    baseline: { type: 'string' },
    configs: { type: 'string', default: CONFIGS.map(c => c.id).join(',') },
    reps: { type: 'string', default: '2' },
    n: { type: 'string', default: '1500' },
    windows: { type: 'string', default: '8' },
    pool: { type: 'string', default: '10000' },
    conns: { type: 'string', default: '50' },
    sim: { type: 'boolean', default: false },
    idle: { type: 'string', default: '10' },
    'by-function': { type: 'boolean', default: false },
    'v8-flags': { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', default: false },
  },
})
if (o.help === true) {
  process.stdout.write('node --import tsx bench/icount.ts [--baseline DIR] [--configs ' + CONFIGS.map(c => c.id).join(',') + '] [--reps 2] [--n 3000] [--pool 10000] [--conns 50] [--sim]\n')
  process.exit(0)
}
if (which('valgrind') === undefined || which('callgrind_control') === undefined) {
  process.stderr.write('valgrind is not installed (apt-get install -y valgrind)\n')
  process.exit(2)
}
const N = Number(o.n)
const WINDOWS = Number(o.windows)
const IDLE_SEC = Number(o.idle)
const BY_FUNCTION = o['by-function'] === true
const POOL = Number(o.pool)
const CONNS = Number(o.conns)
const wanted = o.configs!.split(',')
const configs = CONFIGS.filter(c => wanted.includes(c.id))
if (configs.length !== wanted.length) throw new Error(`unknown configuration in --configs (known: ${CONFIGS.map(c => c.id).join(', ')})`)

interface Tree { label: string, root: string, gateway: GatewayCommand, writeYaml: (y: GatewayYamlOptions) => string }
const here = gatewayCommand({ build: true })
if (here === undefined || here.mode !== 'dist') throw new Error(`this tree's gateway did not build (${here?.note ?? 'no src/cli.ts'})`)
const trees: Tree[] = [{ label: 'this tree', root: resolve('.'), gateway: here, writeYaml: writeGatewayYaml }]
if (o.baseline !== undefined) {
  const b = await loadBaseline(o.baseline)
  trees.push({ label: `${b.commit} (baseline)`, root: b.root, gateway: b.gateway, writeYaml: b.writeYaml })
}

const workDir = mkdtempSync(join(tmpdir(), 'portcullis-icount-'))
const why: string[] = []
const pg: PgCluster | undefined = startPg(await freePort(), undefined, why)
if (pg === undefined) throw new Error(`no PostgreSQL for the gateway's store: ${why.join('; ')}`)
process.on('exit', () => { stopAllSync(); pg.stop(); if (o.keep === true) process.stderr.write(`dumps kept in ${workDir}\n`); else rmSync(workDir, { recursive: true, force: true }) })
for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => { process.exit(130) })
const keys = new Map<Algorithm, KeyMaterial>()
const keyOf = (alg: Algorithm): KeyMaterial => { let k = keys.get(alg); if (k === undefined) { k = makeKeys(alg, workDir); keys.set(alg, k) } return k }

/** valgrind's counters per request over the measured window: Ir (instructions) and, with --sim, cache and branch misses */
async function measure (tree: Tree, c: IConfig, run: number): Promise<Array<Record<string, number>>> {
  const dir = join(workDir, `run${run}`)
  const db = `ic${run}`
  pg!.createDb(db)
  const upPort = await freePort()
  const upstream = start({ name: 'upstream', cmd: process.execPath, args: [join(resolve('.'), 'bench/peers/upstream.mjs')], env: { ...process.env, PORT: String(upPort) }, logFile: join(workDir, `up${run}.log`) })
  const port = await freePort()
  const adminPort = await freePort()
  mkdirSync(dir, { recursive: true })
  const file = tree.writeYaml({ file: join(dir, 'gateway.yaml'), port, adminPort, upstream: `http://127.0.0.1:${upPort}`, keys: keyOf(c.alg), databaseUrl: pg!.url(db), dataDir: join(dir, 'data'), decisions: c.decisions })
  const out = join(dir, 'callgrind.out')
  const sim = o.sim === true ? 'yes' : 'no'
  const vg = ['--tool=callgrind', `--cache-sim=${sim}`, `--branch-sim=${sim}`, '--smc-check=all-non-file', '--instr-atstart=no', `--callgrind-out-file=${out}`]
  const gw = start({ name: 'portcullis', cmd: 'valgrind', args: [...vg, tree.gateway.cmd, ...V8_FLAGS, ...(BY_FUNCTION ? ['--perf-basic-prof'] : []), ...tree.gateway.args(file)], env: { ...process.env, NODE_ENV: 'production' }, cwd: tree.root, logFile: join(dir, 'gateway.log') })
  try {
    await waitUntil(gw, async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`)).status === 200, 15 * 60_000)
    // a warm pool is sent twice (the verify cache admits a token on its second verification);
    // a cold run's tokens are each sent once, the measured ones never seen before, and are
    // minted per window: the gateway accepts no token living longer than its 10-minute TTL,
    // and under valgrind (slower still with --sim) a cold run outlives that
    const warmCount = c.cold ? 6000 : 2 * POOL + 6000
    let tokens = mintTokens(keyOf(c.alg), c.cold ? warmCount : POOL, { tag: `ic${run}` })
    const client = new Pool(`http://127.0.0.1:${port}`, { connections: CONNS, pipelining: 1 })
    let next = 0
    const load = async (n: number): Promise<void> => {
      let sent = 0
      let bad = ''
      const worker = async (): Promise<void> => {
        while (sent < n) {
          sent++
          const r = await client.request({ path: API_PATH, method: 'GET', headers: { authorization: `Bearer ${tokens[next++ % tokens.length]!}` } })
          const body = await r.body.text()
          if (r.statusCode !== 200) bad = `${r.statusCode} ${body.slice(0, 200)}`
        }
      }
      await Promise.all(Array.from({ length: CONNS }, worker))
      if (bad !== '') throw new Error(`an answer was not 200: ${bad}`)
    }
    await load(warmCount)
    const pid = String(gw.pid)
    execFileSync('callgrind_control', ['-i', 'on', pid], { stdio: 'ignore' })
    const perfMap = BY_FUNCTION ? `/tmp/perf-${pid}.map` : undefined
    // what the gateway does by the clock rather than by the request (timers, the revocation
    // feed's heartbeat, the event-loop monitor): under valgrind a request takes ~50× longer,
    // so that work weighs ~50× more per request than it does natively; measured idle and
    // subtracted in proportion to each window's duration
    let idlePerSec = 0
    if (IDLE_SEC > 0) {
      execFileSync('callgrind_control', ['-z', pid], { stdio: 'ignore' })
      await new Promise(resolve => setTimeout(resolve, IDLE_SEC * 1000))
      execFileSync('callgrind_control', ['-d', pid], { stdio: 'ignore' })
      idlePerSec = readWindow(dir, 1, undefined).work! / IDLE_SEC
    }
    const windows: Array<Record<string, number>> = []
    for (let w = 0; w < WINDOWS; w++) {
      if (c.cold) { tokens = mintTokens(keyOf(c.alg), N, { tag: `ic${run}w${w}` }); next = 0 }
      execFileSync('callgrind_control', ['-z', pid], { stdio: 'ignore' })
      const t0 = performance.now()
      await load(N)
      const sec = (performance.now() - t0) / 1000
      execFileSync('callgrind_control', ['-d', pid], { stdio: 'ignore' })
      const window = readWindow(dir, N, perfMap)
      window.idle = idlePerSec * sec / N
      window.net = window.work! - window.idle
      windows.push(window)
    }
    await client.close()
    return windows
  } finally {
    if (BY_FUNCTION && o.keep !== true) rmSync(`/tmp/perf-${String(gw.pid)}.map`, { force: true })
    await stop(gw, 30_000)
    await stop(upstream)
  }
}

// V8's compilers (TurboFan, Maglev, Sparkplug, the bytecode generator and parser): a warm-up
// cost. Natively it settles within seconds; under valgrind, whose threads take turns, a
// compile job queued during the warm-up can land in any window (one HS256 window counted
// 64k of 370k instructions a request in TurboFan), so it is counted apart and left out
const COMPILER = /v8::internal::(compiler|maglev|baseline|interpreter::BytecodeGenerator|Parser|ParserBase|PreParser|Scanner|Compiler|OptimizingCompileDispatcher)|v8::internal::wasm/

// V8's time-driven memory saving, off under valgrind only: a request there takes ~50× longer,
// so the allocation rate per millisecond looks like an idle process's; the memory reducer
// then ran mark-compacts that flushed bytecode and baseline code, and every window compiled
// the hot path again (with them on, 8 of 8 windows of one measurement held 16k–320k
// instructions a request of compiling; with them off the JIT settles after ~3 windows, as it
// does natively after the warm-up)
const V8_FLAGS = o['v8-flags'] !== undefined ? o['v8-flags'].split(' ').filter(f => f !== '') : ['--no-memory-reducer', '--no-flush-bytecode', '--no-flush-baseline-code']

/** the newest dump's counters per request, and what of its Ir went to V8's compilers */
function readWindow (dir: string, n: number, perfMap: string | undefined): Record<string, number> {
  const dumps = readdirSync(dir).filter(f => /^callgrind\.out\.\d+$/.test(f)).sort((a, b) => Number(a.split('.').pop()) - Number(b.split('.').pop()))
  const file = join(dir, dumps[dumps.length - 1]!)
  const text = readFileSync(file, 'utf8')
  const totals = /^(?:summary|totals): ([\d ]+)$/m.exec(text)
  const events = /^events: (.+)$/m.exec(text)
  if (totals === null || events === null) throw new Error(`${file}: no totals (callgrind_control did not reach the gateway?)`)
  const nums = totals[1]!.trim().split(' ').map(Number)
  const out: Record<string, number> = Object.fromEntries(events[1]!.trim().split(' ').map((e, i) => [e, (nums[i] ?? 0) / n]))
  const annotated = execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', '--show=Ir', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 })
  let compiler = 0
  const jit = perfMap !== undefined ? readPerfMap(perfMap) : undefined
  for (const line of annotated.split('\n')) {
    const m = /^\s*([\d,]+) \(\s*[\d.]+%\)\s+(.*)$/.exec(line)
    if (m === null) continue
    const ir = Number(m[1]!.replaceAll(',', ''))
    if (COMPILER.test(m[2]!)) { compiler += ir; continue }
    if (jit === undefined) continue
    // by function: JIT code by the name V8 gave it (--perf-basic-prof), native code by symbol
    const addr = /^\?\?\?:0x([0-9a-f]+) /.exec(m[2]!)
    const name = addr !== null ? (jit(parseInt(addr[1]!, 16)) ?? 'JIT code, unnamed') : m[2]!.replace(/ \[[^\]]*\]$/, '').replace(/^\?\?\?:/, '')
    const key = `fn:${name.slice(0, 140)}`
    out[key] = (out[key] ?? 0) + ir / n
  }
  out.compiler = compiler / n
  out.work = out.Ir! - out.compiler
  if (o.keep !== true) rmSync(file)
  return out
}

/** address → the JIT code object's name, from V8's perf map */
function readPerfMap (file: string): (addr: number) => string | undefined {
  const starts: number[] = []; const ends: number[] = []; const names: string[] = []
  let text = ''
  try { text = readFileSync(file, 'utf8') } catch { return () => undefined }
  const rows = text.split('\n').map(l => /^([0-9a-f]+) ([0-9a-f]+) (.*)$/.exec(l)).filter((m): m is RegExpExecArray => m !== null)
    .map(m => [parseInt(m[1]!, 16), parseInt(m[2]!, 16), m[3]!] as const).sort((a, b) => a[0] - b[0])
  for (const [s, len, name] of rows) { starts.push(s); ends.push(s + len); names.push(name) }
  return (addr) => {
    let lo = 0; let hi = starts.length - 1; let found = -1
    while (lo <= hi) { const mid = (lo + hi) >> 1; if (starts[mid]! <= addr) { found = mid; lo = mid + 1 } else hi = mid - 1 }
    return found >= 0 && addr < ends[found]! ? names[found] : undefined
  }
}

/** a rough cycle estimate from the simulated events (the weights callgrind_annotate's docs use for a modern core) */
function cycles (e: Record<string, number>): number | undefined {
  if (e.I1mr === undefined) return undefined
  const l1 = (e.I1mr ?? 0) + (e.D1mr ?? 0) + (e.D1mw ?? 0)
  const ll = (e.ILmr ?? 0) + (e.DLmr ?? 0) + (e.DLmw ?? 0)
  const mispredicted = (e.Bcm ?? 0) + (e.Bim ?? 0)
  return (e.Ir ?? 0) + 10 * l1 + 100 * ll + 15 * mispredicted
}

const results: Array<{ config: string, tree: string, rep: number, windows: Array<Record<string, number>> }> = []
/**
 * A measurement's figure: the median of its clean windows, those where V8's compilers took
 * under 1 % (a window with a compile job in it also runs the code waiting for it unoptimized,
 * so its other counts are high too); the least window when none is clean.
 */
const clean = (w: Record<string, number>): boolean => (w.compiler ?? 0) < 0.01 * (w.work ?? 0)
const figure = (ws: Array<Record<string, number>>, key: (e: Record<string, number>) => number | undefined): number => {
  const kept = ws.filter(clean)
  const xs = (kept.length > 0 ? kept : ws).map(w => key(w) ?? NaN).filter(x => Number.isFinite(x))
  return kept.length > 0 ? median(xs) : Math.min(...xs)
}
const work = (e: Record<string, number>): number | undefined => e.work
const net = (e: Record<string, number>): number | undefined => e.net
const simCycles = (e: Record<string, number>): number | undefined => { const c = cycles(e); return c === undefined ? undefined : c - (e.compiler ?? 0) }
let run = 0
for (let rep = 0; rep < Number(o.reps); rep++) {
  for (const c of configs) {
    // the order alternates with the repetition, as in run.ts's pairs
    const order = rep % 2 === 0 ? trees : [...trees].reverse()
    // the two trees of a pair run side by side (one core each): counts do not depend on timing
    const measured = await Promise.all(order.map(async (t) => ({ t, windows: await measure(t, c, run++) })))
    for (const { t, windows } of measured) {
      results.push({ config: c.id, tree: t.label, rep, windows })
      const cyc = figure(windows, simCycles)
      process.stderr.write(`${c.id} ${t.label} rep ${rep + 1}: ${Math.round(figure(windows, work)).toLocaleString('en')} instructions/request, net ${Math.round(figure(windows, net)).toLocaleString('en')} ` +
        `(windows: ${windows.map(w => `${Math.round(w.work! / 1000)}k${clean(w) ? '' : `+${Math.round(w.compiler! / 1000)}k compiling`}`).join(', ')})` +
        `${Number.isFinite(cyc) ? `, ~${Math.round(cyc).toLocaleString('en')} cycles (simulated)` : ''}\n`)
    }
  }
}

const fmtK = (x: number): string => `${(x / 1000).toFixed(1)}k`
const lines = [
  `Instructions per request (valgrind callgrind, all threads, user space; V8's compilers left out), ${WINDOWS} windows of ${N} requests per measurement (its figure: the median of the windows where V8's compilers took under 1 %), ${CONNS} connections, ${o.reps} repetition(s). "net": less the work the gateway does by the clock (measured idle for ${IDLE_SEC} s, in proportion to each window's duration)${o.sim === true ? '; ~cycles = Ir + 10 × L1 misses + 100 × LL misses + 15 × mispredicted branches (simulated)' : ''}`,
  '',
  `| configuration | ${trees.map(t => `${t.label}: all / net`).join(' | ')}${trees.length > 1 ? ' | baseline ÷ this tree, all / net (below 1: this tree costs more) |' : ' |'}`,
  `|---|${trees.map(() => '---:').join('|')}${trees.length > 1 ? '|---:' : ''}|`,
]
const byFunction: string[] = []
for (const c of configs) {
  const of = (t: Tree, key: (e: Record<string, number>) => number | undefined): number[] => results.filter(r => r.config === c.id && r.tree === t.label).map(r => figure(r.windows, key))
  const cells = trees.map(t => {
    const cyc = of(t, simCycles).filter(x => Number.isFinite(x))
    return `${of(t, work).map(fmtK).join(', ')} / ${of(t, net).map(fmtK).join(', ')}` + (cyc.length > 0 ? ` (~${cyc.map(fmtK).join(', ')} cycles)` : '')
  })
  let ratio = ''
  if (trees.length > 1) {
    const pairs = (key: (e: Record<string, number>) => number | undefined): number[] => {
      const a = of(trees[1]!, key); const b = of(trees[0]!, key)
      return a.map((x, i) => x / b[i]!).filter(x => Number.isFinite(x))
    }
    const show = (xs: number[]): string => xs.length === 0 ? '' : xs.length === 1 ? xs[0]!.toFixed(3) : `${geometricMean(xs).toFixed(3)} (${Math.min(...xs).toFixed(3)}–${Math.max(...xs).toFixed(3)})`
    const cyc = pairs(simCycles)
    ratio = ` | ${show(pairs(work))} / ${show(pairs(net))}${cyc.length > 0 ? `; cycles ${show(cyc)}` : ''}`
    if (BY_FUNCTION) {
      // each measurement's median window, function by function: where the difference is
      const fns = (t: Tree): Map<string, number> => {
        const m = new Map<string, number>()
        const runs = results.filter(r => r.config === c.id && r.tree === t.label)
        for (const r of runs) {
          const pool = r.windows.some(clean) ? r.windows.filter(clean) : r.windows
          const sorted = [...pool].sort((x, y) => x.work! - y.work!)
          const mid = sorted[Math.floor(sorted.length / 2)]!
          for (const [k, v] of Object.entries(mid)) if (k.startsWith('fn:')) m.set(k.slice(3), (m.get(k.slice(3)) ?? 0) + v / runs.length)
        }
        return m
      }
      const a = fns(trees[0]!); const b = fns(trees[1]!)
      const diff = [...new Set([...a.keys(), ...b.keys()])].map(k => [k, (a.get(k) ?? 0) - (b.get(k) ?? 0), b.get(k) ?? 0, a.get(k) ?? 0] as const)
        .sort((x, y) => Math.abs(y[1]) - Math.abs(x[1])).slice(0, 30)
      byFunction.push('', `${c.id}: instructions per request by function, ${trees[1]!.label.split(' ')[0]} → this tree (the 30 largest differences)`, '')
      for (const [k, d, was, now] of diff) byFunction.push(`${(d >= 0 ? '+' : '') + Math.round(d).toString().padStart(6)}  ${Math.round(was).toString().padStart(7)} → ${Math.round(now).toString().padStart(7)}  ${k}`)
    }
  }
  lines.push(`| ${c.id} | ${cells.join(' | ')}${ratio} |`)
}
process.stdout.write([...lines, ...byFunction].join('\n') + '\n')
process.exit(0)
