/**
 * Processes the benchmark starts: pinned to a core with taskset, output to a log file,
 * tracked so that every one of them is ended by PID (never by name) on exit.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { closeSync, openSync, readdirSync, readFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

export interface Started {
  name: string
  pid: number
  child: ChildProcess
  logFile: string
  /** ms since epoch when spawn was called */
  spawnedAtMs: number
  exited: Promise<number | null>
}

const running = new Set<Started>()

export interface StartOptions {
  name: string
  /** the core to pin to (taskset -c); undefined: not pinned */
  core?: number | undefined
  cmd: string
  args: string[]
  env?: NodeJS.ProcessEnv
  cwd?: string
  logFile: string
}

export function start (o: StartOptions): Started {
  const fd = openSync(o.logFile, 'w')
  const [cmd, args] = o.core === undefined ? [o.cmd, o.args] : ['taskset', ['-c', String(o.core), o.cmd, ...o.args]]
  const spawnedAtMs = Date.now()
  // taskset execs the command: the PID we get is the server's own PID
  const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], env: o.env ?? process.env, cwd: o.cwd })
  closeSync(fd)
  if (child.pid === undefined) throw new Error(`${o.name}: could not start ${o.cmd}`)
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const s: Started = { name: o.name, pid: child.pid, child, logFile: o.logFile, spawnedAtMs, exited }
  running.add(s)
  exited.then(() => running.delete(s), () => {})
  return s
}

export async function stop (s: Started, graceMs = 3000): Promise<void> {
  if (s.child.exitCode !== null || s.child.signalCode !== null) return
  try { process.kill(s.pid, 'SIGTERM') } catch { return }
  const t = await Promise.race([s.exited.then(() => 'exited'), sleep(graceMs).then(() => 'timeout')])
  if (t === 'timeout') {
    try { process.kill(s.pid, 'SIGKILL') } catch {}
    await s.exited
  }
}

/** ends everything still running (runner exit, Ctrl-C) — only processes we started, by PID */
export function stopAllSync (): void {
  for (const s of running) {
    try { process.kill(s.pid, 'SIGKILL') } catch {}
  }
  running.clear()
}

export function isAlive (s: Started): boolean {
  return s.child.exitCode === null && s.child.signalCode === null
}

export function tail (file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n')
  } catch { return '' }
}

/** a free TCP port on 127.0.0.1 (asks the kernel for one) */
/** ports handed out so far: the kernel may give a just-closed port again, and one run asks
 * for several (upstream, public, admin) before any is bound — a repeat made a gateway's admin
 * listener collide with its own public one */
const handedOut = new Set<number>()

export async function freePort (): Promise<number> {
  for (;;) {
    const port = await anyFreePort()
    if (handedOut.has(port)) continue
    handedOut.add(port)
    return port
  }
}

async function anyFreePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

/** polls `probe` until it returns true; throws with the process log when the process dies or time runs out */
export async function waitUntil (s: Started, probe: () => Promise<boolean>, timeoutMs = 20_000): Promise<number> {
  const t0 = Date.now()
  while (Date.now() - t0 < timeoutMs) {
    if (!isAlive(s)) throw new Error(`${s.name} exited (code ${String(s.child.exitCode)}) before it was ready:\n${tail(s.logFile, 40)}`)
    try { if (await probe()) return Date.now() } catch {}
    await sleep(10)
  }
  throw new Error(`${s.name} was not ready after ${timeoutMs} ms:\n${tail(s.logFile, 40)}`)
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100

/** utime+stime of a process, in microseconds (resolution 1/CLK_TCK s) */
export function cpuUs (pid: number): number {
  const t = cpuTimesUs(pid)
  return t.user + t.system
}

/** user and kernel CPU time of a process, µs */
export function cpuTimesUs (pid: number): { user: number, system: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // the command name (field 2) may hold spaces: split after its closing parenthesis
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return { user: Number(fields[11]) * 1_000_000 / CLK_TCK, system: Number(fields[12]) * 1_000_000 / CLK_TCK }
}

/**
 * CPU time (user + system, µs) of each thread of a process, summed by thread name: `main` for
 * the thread whose id is the pid (the JS thread), the others by their kernel name — on Node 20
 * here every helper (V8's compiler and GC workers, libuv's pool) is called "node". Threads that
 * ended in between are not seen.
 */
export function threadCpuUs (pid: number): Map<string, number> {
  const out = new Map<string, number>()
  let tids: string[]
  try { tids = readdirSync(`/proc/${pid}/task`) } catch { return out }
  for (const tid of tids) {
    let stat: string
    try { stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8') } catch { continue }
    const name = tid === String(pid) ? 'main' : stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')')).trim()
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    const us = (Number(fields[11]) + Number(fields[12])) * 1_000_000 / CLK_TCK
    out.set(name, (out.get(name) ?? 0) + us)
  }
  return out
}

/** the growth of each thread group between two threadCpuUs readings, µs per request */
export function threadDeltaPerReq (before: Map<string, number>, after: Map<string, number>, requests: number): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, us] of after) out[name] = (us - (before.get(name) ?? 0)) / requests
  return out
}

/** VmHWM (peak RSS) and VmRSS in KiB */
export function memKiB (pid: number): { hwm: number, rss: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const pick = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? NaN)
  return { hwm: pick('VmHWM'), rss: pick('VmRSS') }
}

export function which (cmd: string): string | undefined {
  const r = spawnSync('sh', ['-c', `command -v ${cmd}`], { encoding: 'utf8' })
  return r.status === 0 ? r.stdout.trim() : undefined
}
