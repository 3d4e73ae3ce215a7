/** Runs wrk (pinned, one thread) with bench/wrk/load.lua and parses the line its done() prints. */
import { spawn } from 'node:child_process'
import { fileURLToPath } from 'node:url'

export const LOAD_SCRIPT = fileURLToPath(new URL('../wrk/load.lua', import.meta.url))
export const SESSIONS_SCRIPT = fileURLToPath(new URL('../wrk/sessions.lua', import.meta.url))

export interface WrkResult {
  requests: number
  durationUs: number
  bytes: number
  connectErrors: number
  readErrors: number
  writeErrors: number
  /** responses with a status > 399 */
  statusErrors: number
  timeouts: number
  p50Us: number
  p90Us: number
  p99Us: number
  maxUs: number
  meanUs: number
  /** cold mode: how many times the token file ran out and wrapped (0 = every token was new) */
  wrapped: number
}

export interface WrkOptions {
  url: string
  core?: number | undefined
  connections: number
  durationSec: number
  /** one token a line, or undefined for no Authorization header */
  tokenFile?: string | undefined
  method?: 'GET' | 'POST'
  path: string
  offset?: number
  bodyFile?: string | undefined
  mode?: 'pool' | 'cold'
  /** 'close': `Connection: close` on every request, one new connection each (default keep-alive) */
  connection?: 'close'
  timeoutSec?: number
  /** another Lua script and its arguments (instead of load.lua's) */
  script?: { file: string, args: string[] }
}

export async function runWrk (o: WrkOptions): Promise<WrkResult> {
  const wrkArgs = [
    // wrk takes whole seconds
    '-t1', `-c${o.connections}`, `-d${Math.max(1, Math.round(o.durationSec))}s`, '--timeout', `${o.timeoutSec ?? 10}s`,
    '-s', o.script?.file ?? LOAD_SCRIPT, o.url, '--',
    ...(o.script?.args ?? [o.tokenFile ?? '-', o.method ?? 'GET', o.path, String(o.offset ?? 0), o.bodyFile ?? '-', o.mode ?? 'pool', ...(o.connection === 'close' ? ['close'] : [])]),
  ]
  const [cmd, args] = o.core === undefined ? ['wrk', wrkArgs] : ['taskset', ['-c', String(o.core), 'wrk', ...wrkArgs]]
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve))
  const line = out.split('\n').find((l) => l.startsWith('WRKJSON '))
  if (code !== 0 || line === undefined) throw new Error(`wrk failed (exit ${String(code)}):\n${out}`)
  return JSON.parse(line.slice('WRKJSON '.length)) as WrkResult
}

export function rps (r: WrkResult): number {
  return r.requests / (r.durationUs / 1e6)
}

/** socket errors and non-2xx/3xx answers; a measured run must have none */
export function errorCount (r: WrkResult): number {
  return r.connectErrors + r.readErrors + r.writeErrors + r.statusErrors + r.timeouts
}
