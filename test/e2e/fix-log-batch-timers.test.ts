import t from 'tap'
import { createHook } from 'node:async_hooks'
import { performance } from 'node:perf_hooks'
import { Writable } from 'node:stream'
import { BATCH_INTERVAL_MS, LineBatch, MAX_PENDING_CHARS } from '../../plugins/access-log.js'

// The decision log's batching, driven with real timers and the real clock: each full batch
// armed a timer of its own and the ones left over either wrote a batch with room left 1–2 ms
// after a full one, or (92ffd32) kept re-arming while full batches went on — timers without
// bound under load, ~5 % of a request's CPU in the paired benchmark.

const LINE = '{"msg":"decision","path":"/api/' + 'x'.repeat(200) + '"}\n'
const LINES_TO_FILL = Math.ceil(MAX_PENDING_CHARS / LINE.length)

interface Written { at: number, chars: number }
const sink = (): { stream: Writable, writes: Written[] } => {
  const writes: Written[] = []
  const stream = new Writable({ write (chunk, _enc, cb) { writes.push({ at: performance.now(), chars: String(chunk).length }); cb() } })
  return { stream, writes }
}
const turn = async (): Promise<void> => { await new Promise(resolve => setImmediate(resolve)) }

/**
 * The most timers with one callback alive at once, among those created while `run` goes on
 * (async_hooks sees unref'd timers too; grouping by callback leaves out the test runner's own)
 */
const mostTimersAlive = async (run: () => Promise<void>): Promise<number> => {
  const alive = new Map<unknown, Set<number>>()
  const callbackOf = new Map<number, unknown>()
  let most = 0
  const forget = (id: number): void => { alive.get(callbackOf.get(id))?.delete(id); callbackOf.delete(id) }
  const hook = createHook({
    init (id, type, _trigger, resource) {
      if (type !== 'Timeout') return
      const callback = (resource as { _onTimeout?: unknown })._onTimeout
      const group = alive.get(callback) ?? new Set()
      alive.set(callback, group.add(id))
      callbackOf.set(id, callback)
      most = Math.max(most, group.size)
    },
    // a timer is spent when its callback starts (destroy comes later, and one re-armed from
    // its own callback would count twice meanwhile), or when it is cleared
    before: forget,
    destroy: forget,
  })
  hook.enable()
  try { await run() } finally { hook.disable() }
  return most
}

/**
 * Three quarters of a batch every turn for `ms`: a full batch leaves every turn or two, and
 * lines are left over when the timer fires, as under real load
 */
const LINES_PER_TURN = Math.ceil(LINES_TO_FILL * 0.75)
const underLoad = async (batch: LineBatch, ms: number): Promise<number> => {
  let lines = 0
  const until = performance.now() + ms
  while (performance.now() < until) {
    for (let i = 0; i < LINES_PER_TURN; i++) batch.add(LINE, performance.now())
    lines += LINES_PER_TURN
    await turn()
  }
  return lines
}

t.test('under load one batch timer at most is alive, and no line is lost', async (t) => {
  const { stream, writes } = sink()
  const batch = new LineBatch(stream)
  let lines = 0
  const most = await mostTimersAlive(async () => {
    lines = await underLoad(batch, 40 * BATCH_INTERVAL_MS)
    // the batch left over is written once its interval has passed
    const started = performance.now()
    while (writes.reduce((sum, w) => sum + w.chars, 0) < lines * LINE.length && performance.now() - started < 1000) await turn()
  })
  t.ok(writes.length > 10, `${writes.length} writes for ${lines} lines`)
  t.equal(most, 1, `the most batch timers alive at once: ${most}`)
  t.equal(writes.reduce((sum, w) => sum + w.chars, 0), lines * LINE.length, 'every line written, once')
})

t.test('a batch with room left is written no sooner than BATCH_INTERVAL_MS after the write before', async (t) => {
  const { stream, writes } = sink()
  const batch = new LineBatch(stream)
  // full batches, then a line each turn for a while: the timer's batches, each after a full one or a timer's
  await underLoad(batch, 4 * BATCH_INTERVAL_MS)
  const until = performance.now() + 8 * BATCH_INTERVAL_MS
  while (performance.now() < until) { batch.add(LINE, performance.now()); await turn() }
  const started = performance.now()
  while (performance.now() - started < 1000 && writes.at(-1)!.at < until) await turn()
  const early = writes.filter((w, i) => i > 0 && w.chars < MAX_PENDING_CHARS && w.at - writes[i - 1]!.at < BATCH_INTERVAL_MS * 0.9)
  t.ok(writes.some(w => w.chars < MAX_PENDING_CHARS), 'batches with room left were written by the timer')
  t.same(early.map(w => Math.round((w.at - writes[writes.indexOf(w) - 1]!.at) * 100) / 100), [], 'none sooner than the interval (ms after the write before)')
})

t.test('a quiet log writes its line at the end of the turn, and a flush writes what is held', async (t) => {
  const { stream, writes } = sink()
  const batch = new LineBatch(stream)
  batch.add(LINE, performance.now())
  t.equal(writes.length, 0, 'held for the turn')
  await turn()
  t.equal(writes.length, 1, 'written one turn later: the write before is long past')
  batch.add(LINE, performance.now())
  batch.flush()
  t.equal(writes.length, 2, 'flush (at shutdown) writes at once')
  batch.flush()
  t.equal(writes.length, 2, 'nothing held: nothing written')
})
