import { test } from 'tap'
import { Worker } from 'node:worker_threads'
import { cpuUs, threadCpuUs, threadDeltaPerReq } from '../../bench/lib/proc.js'

// the bench splits a gateway's CPU per request by thread (/proc/PID/task): these read this
// test's own process, whose main thread and one worker thread are made to burn CPU. The work
// is counted in CPU time, not wall time, so a loaded CI machine only makes it slower.
function burnCpu (us: number): void {
  const end = process.cpuUsage().user + us
  let x = 0
  while (process.cpuUsage().user < end) for (let i = 0; i < 10_000; i++) x += Math.sqrt(x + i)
  if (x < 0) throw new Error('unreachable')
}

test('threadCpuUs: the main thread by its own name, the threads add up to the process', async (t) => {
  const before = threadCpuUs(process.pid)
  t.ok(before.has('main'), 'the thread whose id is the pid is "main"')
  burnCpu(300_000)
  const after = threadCpuUs(process.pid)
  const perReq = threadDeltaPerReq(before, after, 1)
  t.ok((perReq.main ?? 0) >= 250_000, `the main thread's 300 ms of work shows (${perReq.main} µs)`)
  let sum = 0
  for (const us of after.values()) sum += us
  // threads that ended are in the process total but in no task: the sum can only be lower
  t.ok(sum <= cpuUs(process.pid) + 20_000, `threads ${sum} µs ≤ process ${cpuUs(process.pid)} µs`)
  t.ok(sum >= cpuUs(process.pid) * 0.8, 'and most of it')
})

test('threadCpuUs: work on another thread is not counted as main', async (t) => {
  // a fixed amount of the worker thread's own CPU time (/proc/thread-self: that thread's ticks),
  // and its answer told apart from any other message (others -20000 µs, then 0 µs, in two CI
  // runs: the worker's thread had ended before the reading, see below)
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads')
    const { readFileSync } = require('node:fs')
    const ticks = () => {
      const stat = readFileSync('/proc/thread-self/stat', 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      return Number(f[11]) + Number(f[12])
    }
    parentPort.on('message', (wanted) => {
      const end = ticks() + wanted
      let x = 0
      while (ticks() < end) for (let i = 0; i < 100000; i++) x += Math.sqrt(x + i)
      parentPort.postMessage(x > 0 ? 'burnt' : 'unreachable')
    })
    parentPort.postMessage('ready')`, { eval: true, execArgv: [] })
  // The worker must outlive the second reading: with `parentPort.once` it had nothing left to
  // wait for after its answer and ended, and its thread — with its 300 ms — left
  // /proc/PID/task before the reading half the time (others 0 or -10000 µs in CI and here).
  // `on` keeps it until terminate(). No inherited --import either (tsx, tap's loaders start
  // module-hook threads of their own), and the reading starts once the worker is set up
  t.teardown(() => worker.terminate())
  await new Promise<void>(resolve => {
    const onReady = (m: unknown): void => { if (m === 'ready') { worker.off('message', onReady); resolve() } }
    worker.on('message', onReady)
  })
  const before = threadCpuUs(process.pid)
  worker.postMessage(30) // clock ticks: 300 ms at the usual 100 per second
  await new Promise<void>(resolve => {
    const onMessage = (m: unknown): void => { if (m === 'burnt') { worker.off('message', onMessage); resolve() } }
    worker.on('message', onMessage)
  })
  const perReq = threadDeltaPerReq(before, threadCpuUs(process.pid), 1)
  const others = Object.entries(perReq).filter(([name]) => name !== 'main').reduce((s, [, us]) => s + us, 0)
  // a short-lived thread that ended between the readings takes its ticks with it: slack for that
  t.ok(others >= 200_000, `the worker's work is on other threads (${others} µs)`)
  t.ok((perReq.main ?? 0) < others / 4, `not on main (${perReq.main} µs)`)
})
