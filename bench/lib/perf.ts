/**
 * `--perf`: Linux perf samples of a gateway's measured window. Where `--profile` (V8's
 * sampler) sees JavaScript only, perf sees every frame of every thread: Node's C++ (the HTTP
 * parser, streams, libuv), V8's runtime and GC, libc, the kernel's syscalls — and the JIT code
 * by name, from the /tmp/perf-PID.map that `--perf-basic-prof` writes. The event is
 * task-clock (CPU time), the only sampling event a virtual machine without hardware counters
 * offers.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { rmSync, writeFileSync } from 'node:fs'
import { once } from 'node:events'

export interface PerfRecording { child: ChildProcess, file: string, pid: number, keep: boolean }

/** `keep`: with call graphs (frame pointers), and perf.data stays for `perf report -g` (--perf-keep) */
export function startPerf (pid: number, file: string, keep = false): PerfRecording {
  const child = spawn('perf', ['record', '-q', '-e', 'task-clock', '-F', '1999', ...(keep ? ['-g'] : []), '-p', String(pid), '-o', file], { stdio: 'ignore' })
  return { child, file, pid, keep }
}

/** ends the recording (SIGINT makes perf write its file) and waits for it */
export async function stopPerf (r: PerfRecording): Promise<void> {
  if (r.child.exitCode !== null || r.child.signalCode !== null) return
  const exited = once(r.child, 'exit')
  r.child.kill('SIGINT')
  await exited
}

/**
 * Self time by shared object and by symbol, as `perf report` prints it, into `out`; then the
 * samples and the JIT map are removed (tens of MB each run) unless kept. Call after the gateway exited,
 * so its map file is complete.
 */
export function summarizePerf (r: PerfRecording, out: string): void {
  const report = (sort: string, limit: string): string => spawnSync('perf', ['report', '-i', r.file, '--no-children', '--sort', sort, '--stdio', '--percent-limit', limit], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).stdout
  writeFileSync(out, `${report('dso', '0.5')}\n${report('dso,sym', '0.2')}`)
  if (r.keep) return
  rmSync(r.file, { force: true })
  rmSync(`/tmp/perf-${r.pid}.map`, { force: true })
}
