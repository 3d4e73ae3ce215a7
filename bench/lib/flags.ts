/** Command-line flags of bench/run.ts. */

export interface Flags {
  reps: number
  durationSec: number
  warmupSec: number
  scaleReps: number
  coldTokens: number
  /** configuration ids (or prefixes ending in *) to run; empty = all */
  only: string[]
  skip: Set<string>
  build: boolean
  profile: boolean
  /** profile the cold HS256 case instead (every token new) */
  profileCold: boolean
  smoke: boolean
  quick: boolean
  verbose: boolean
  store: 'pg' | 'embedded' | 'auto'
  help: boolean
  /** another entry point to run as `node --import tsx ENTRY start -c FILE` (e.g. another checkout) */
  gatewayEntry: string | undefined
  /** results JSON files to redraw (merged in order) instead of running */
  render: string[]
  /** another checkout whose gateway runs beside each portcullis configuration (old vs new, same window) */
  baseline: string | undefined
  /** extra node arguments for every portcullis process (e.g. --trace-gc) */
  nodeArgs: string[]
  /** sample each portcullis run's measured window with Linux perf (native and JIT frames) */
  perf: boolean
  perfKeep: boolean
}

export const USAGE = `usage: npm run bench -- [flags]
  --quick            1 repetition × 2 s (warm-up 2 s), scale checks once
  --smoke            a subset, ~2 s per configuration, for CI; exits 1 when a run fails
  --reps N           repetitions of the round-robin (default 6)
  --duration S       measured seconds per run, whole (default 6)
  --warmup S         warm-up seconds per run, whole (default 3)
  --scale-reps N     repetitions of each scale-check pair (default 3)
  --cold-tokens N    distinct tokens in each cold file (default 200000)
  --only a,b,c*      run only these configuration ids (c* = prefix); scale checks by variant id
  --skip x,y         skip parts: matrix, scale, sessions, startup
  --profile          also take a CPU profile of portcullis (EdDSA) under load
  --profile-cold     the same for portcullis-HS256-cold (every token new)
  --store pg|embedded  session store for the portcullis runs (default: pg when installed)
  --no-build         do not compile the gateway first (reuse bench/results/build, or tsx)
  --verbose          keep every log file (and the temp dir)
  --render a.json[,b.json]  redraw the report from saved results (later files replace sections)
  --gateway-entry F  run portcullis as: node --import tsx F start -c FILE (another checkout)
  --baseline DIR     also run DIR's gateway (another checkout, e.g. a git worktree of the last
                     recorded commit) right beside each portcullis configuration it supports,
                     alternating which goes first: the report adds new ÷ baseline per pair
  --node-args "A B"  extra node arguments for every portcullis process (--trace-gc, V8 flags…)
  --perf             sample each portcullis run's measured window with \`perf record\` (task-clock,
                     user and kernel frames, JIT code named by --perf-basic-prof); writes
                     perf-<run>.txt (self time by symbol) beside the results
  --perf-keep        --perf with call graphs, keeping each perf.data (implies --verbose):
                     perf report -i DIR/runs/NNN-ID/perf.data --children -g caller
`

export function parseFlags (argv: readonly string[]): Flags {
  const f: Flags = { reps: 6, durationSec: 6, warmupSec: 3, scaleReps: 3, coldTokens: 200_000, only: [], skip: new Set(), build: true, profile: false, profileCold: false, smoke: false, quick: false, verbose: false, store: 'auto', help: false, gatewayEntry: undefined, render: [], baseline: undefined, nodeArgs: [], perf: false, perfKeep: false }
  const num = (i: number): number => {
    const v = Number(argv[i + 1])
    if (!Number.isFinite(v) || v <= 0) throw new Error(`${String(argv[i])} needs a positive number`)
    return v
  }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    switch (a) {
      case '--quick': f.quick = true; f.reps = 1; f.durationSec = 2; f.warmupSec = 2; f.scaleReps = 1; break
      case '--smoke': f.smoke = true; f.reps = 1; f.durationSec = 1; f.warmupSec = 1; f.scaleReps = 1; f.skip.add('scale'); f.skip.add('sessions'); break
      case '--reps': f.reps = num(i); i++; break
      case '--duration': f.durationSec = num(i); i++; break
      case '--warmup': f.warmupSec = num(i); i++; break
      case '--scale-reps': f.scaleReps = num(i); i++; break
      case '--cold-tokens': f.coldTokens = num(i); i++; break
      case '--only': f.only = String(argv[i + 1] ?? '').split(',').filter(Boolean); i++; break
      case '--skip': for (const s of String(argv[i + 1] ?? '').split(',')) f.skip.add(s); i++; break
      case '--profile': f.profile = true; break
      case '--profile-cold': f.profile = true; f.profileCold = true; break
      case '--no-build': f.build = false; break
      case '--verbose': f.verbose = true; break
      case '--store': {
        const v = argv[i + 1]
        if (v !== 'pg' && v !== 'embedded') throw new Error('--store takes pg or embedded')
        f.store = v
        i++
        break
      }
      case '--render': f.render = String(argv[i + 1] ?? '').split(',').filter(Boolean); i++; break
      case '--gateway-entry': f.gatewayEntry = String(argv[i + 1]); i++; break
      case '--baseline': f.baseline = String(argv[i + 1]); i++; break
      case '--perf': f.perf = true; break
      case '--perf-keep': f.perf = true; f.perfKeep = true; f.verbose = true; break
      case '--node-args': f.nodeArgs = String(argv[i + 1] ?? '').split(' ').filter(Boolean); i++; break
      case '--help': case '-h': f.help = true; break
      default: throw new Error(`unknown flag ${String(a)}\n${USAGE}`)
    }
  }
  return f
}

export function selected (f: Flags, id: string): boolean {
  if (f.only.length === 0) return true
  return f.only.some((o) => o.endsWith('*') ? id.startsWith(o.slice(0, -1)) : o === id)
}
