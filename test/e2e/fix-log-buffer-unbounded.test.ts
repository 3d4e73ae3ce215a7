/**
 * fix-log-buffer-unbounded (a stop 43 review of resource exhaustion): the log destination
 * buffered without bound while stdout was not read — a stalled log shipper, a full pipe: with
 * 8 KB paths, 99,000 requests in 15 s grew the heap to 1 GB (RSS 1.55 GB), released only as
 * stdout caught up, and the decision line carried each path whole. The destination now holds
 * at most LOG_BUFFER_MAX_BYTES and drops (and counts) writes past it; the decision line carries
 * at most MAX_LOGGED_PATH_CHARS of the path.
 *
 * Real parts: a FIFO nobody reads as the logger's stdout (opened non-blocking, as a full pipe
 * answers EAGAIN); the gateway on a real socket with its log captured.
 */
import t from 'tap'
import { execFileSync } from 'node:child_process'
import { closeSync, constants, openSync } from 'node:fs'
import { join } from 'node:path'
import { Writable } from 'node:stream'
import { pino } from 'pino'
import { createLogger, droppedLogWrites, LOG_BUFFER_MAX_BYTES } from '../../src/logger.js'
import { MAX_LOGGED_PATH_CHARS } from '../../plugins/access-log.js'
import { baseConfig, makeKey, startGateway, raw } from '../fixtures/gateway.js'
import { openStore } from '../../src/sessions/store.js'

t.test('a stdout nobody reads holds at most LOG_BUFFER_MAX_BYTES; the rest is dropped and counted', async t => {
  const fifo = join(t.testdir({}), 'stdout')
  execFileSync('mkfifo', [fifo])
  // the reader end is opened (so the writer may open) and never read
  const reader = openSync(fifo, constants.O_RDONLY | constants.O_NONBLOCK)
  const writer = openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK)
  const logger = createLogger('info', writer)
  const stream = (logger as unknown as Record<symbol, { _len: number }>)[pino.symbols.streamSym]!
  // the reader gone, the next write fails with EPIPE, after which pino stops writing
  t.teardown(() => { closeSync(reader) })
  const before = droppedLogWrites()
  const line = 'x'.repeat(1000)
  // 40 MB of lines, in turns (the destination hands them on between turns)
  for (let i = 0; i < 400; i++) {
    for (let j = 0; j < 100; j++) logger.info({ line }, 'filler')
    await new Promise(resolve => setImmediate(resolve))
  }
  t.ok(stream._len <= LOG_BUFFER_MAX_BYTES, `the destination holds ${stream._len} bytes, at most ${LOG_BUFFER_MAX_BYTES}`)
  t.ok(droppedLogWrites() > before, `writes past it were dropped and counted (${droppedLogWrites() - before})`)
})

t.test('a decision line carries at most MAX_LOGGED_PATH_CHARS of the path', async t => {
  const lines: Array<Record<string, unknown>> = []
  const logger = pino({ level: 'info' }, new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString().split('\n')) if (l !== '') lines.push(JSON.parse(l) as Record<string, unknown>)
      cb()
    },
  }))
  const store = await openStore({ dataDir: 'memory://' })
  t.teardown(() => store.close())
  const gw = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }]), { store, logger })
  const path = '/nope/' + 'a'.repeat(8000)
  const res = await raw(gw.url, path)
  t.equal(res.status, 404, 'no route')
  // decision lines are handed over in batches within a few milliseconds
  for (let i = 0; i < 100 && !lines.some(l => l.msg === 'decision'); i++) await new Promise(resolve => setTimeout(resolve, 10))
  const decision = lines.find(l => l.msg === 'decision')
  t.ok(decision !== undefined, 'the decision line was written')
  t.equal(String(decision?.path).length, MAX_LOGGED_PATH_CHARS + 1, 'the path cut to MAX_LOGGED_PATH_CHARS, and marked')
  t.ok(String(decision?.path).startsWith('/nope/aaa') && String(decision?.path).endsWith('…'), 'its start kept, its end marked')
})
