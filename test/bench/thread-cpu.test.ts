import { test } from 'tap'
import { Worker } from 'node:worker_threads'
import { cpuUs, threadCpuUs, threadDeltaPerReq } from '../../bench/lib/proc.js'

// the bench splits a gateway's CPU per request by thread (/proc/PID/task): these read this
// test's own process, whose main thread and one worker thread are made to burn CPU
function burn (ms: number): void {
  const end = Date.now() + ms
  let x = 0
  while (Date.now() < end) x += Math.sqrt(x + 1)
  if (x < 0) throw new Error('unreachable')
}

test('threadCpuUs: the main thread by its own name, the threads add up to the process', async (t) => {
  const before = threadCpuUs(process.pid)
  t.ok(before.has('main'), 'the thread whose id is the pid is "main"')
  burn(300)
  const after = threadCpuUs(process.pid)
  const perReq = threadDeltaPerReq(before, after, 1)
  t.ok((perReq.main ?? 0) >= 150_000, `the main thread's 300 ms of work shows (${perReq.main} µs)`)
  let sum = 0
  for (const us of after.values()) sum += us
  // threads that ended are in the process total but in no task: the sum can only be lower
  t.ok(sum <= cpuUs(process.pid) + 20_000, `threads ${sum} µs ≤ process ${cpuUs(process.pid)} µs`)
  t.ok(sum >= cpuUs(process.pid) * 0.8, 'and most of it')
})

test('threadCpuUs: work on another thread is not counted as main', async (t) => {
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads')
    parentPort.once('message', () => {
      const end = Date.now() + 400
      let x = 0
      while (Date.now() < end) x += Math.sqrt(x + 1)
      parentPort.postMessage(x > 0)
    })`, { eval: true })
  t.teardown(() => worker.terminate())
  await new Promise(resolve => worker.once('online', resolve))
  const before = threadCpuUs(process.pid)
  worker.postMessage('go')
  await new Promise(resolve => worker.once('message', resolve))
  const perReq = threadDeltaPerReq(before, threadCpuUs(process.pid), 1)
  const others = Object.entries(perReq).filter(([name]) => name !== 'main').reduce((s, [, us]) => s + us, 0)
  t.ok(others >= 200_000, `the worker's 400 ms is on other threads (${others} µs)`)
  t.ok((perReq.main ?? 0) < 200_000, `not on main (${perReq.main} µs)`)
})
