import t from 'tap'
import { raw } from '../fixtures/gateway.js'
import { newTraceparent, parseTraceparent, setup, start, traced } from '../fixtures/tracing.js'
import type { ReceivedSpan } from '../fixtures/otlp-receiver.js'

// fix-trace-headers-passed-raw (found by a hostile review, finding 5): with tracing on, the
// upstream got the client's trace headers as they came in two ways. An unsampled request with
// the client's flags 00 kept its `traceparent` verbatim — a later version with a 6 KB tail
// (`cc-<trace-id>-<span-id>-00-AAAA…`) went upstream as sent — and `tracestate` was never
// rewritten at any ratio: 6,000 characters of garbage, 200 members (W3C Trace Context allows 32
// and 512 characters) and invalid members all reached the upstream, while the exported span
// carried OpenTelemetry's cleaned-up TraceState. Two requests in flight with one x-request-id
// (the client chooses it) could not be told apart and passed both headers as they came.
// Now the upstream's `traceparent` is always version 00 written from the parsed ids (an invalid
// one restarts the trace) and its `tracestate` is the parsed, bounded list, or none.
// `baggage` passes as the client sent it, as any header the rewriter does not reserve.
// Real gateway, real OTLP/HTTP receiver, recording upstream on 127.0.0.1.

const CLIENT = 3
const A6K = 'A'.repeat(6000)
const VERSION_00 = /^00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]$/

interface Row {
  name: string
  /** the client's ids, written into `headers` */
  traceId: string
  spanId: string
  headers: Array<[string, string]>
  /** the upstream is in the client's trace (else a new one the gateway started) */
  continued: boolean
  /** what the upstream gets; undefined: no such header */
  tracestate: string | undefined
  baggage?: string
}

function rows (): Row[] {
  const row = (name: string, make: (traceId: string, spanId: string) => Array<[string, string]>, expected: Pick<Row, 'continued' | 'tracestate' | 'baggage'>): Row => {
    const { traceId, spanId } = newTraceparent()
    return { name, traceId, spanId, headers: make(traceId, spanId), ...expected }
  }
  const valid = (traceId: string, spanId: string): [string, string] => ['traceparent', `00-${traceId}-${spanId}-00`]
  const members = Array.from({ length: 200 }, (_, i) => `v${i}=x`)
  const big = (k: string, c: string): string => `${k}=${c.repeat(255)}`
  return [
    row('a later version with a 6 KB tail: read as version 00, the tail dropped (§3.2.4)',
      (tid, sid) => [['traceparent', `cc-${tid}-${sid}-00-${A6K}`]], { continued: true, tracestate: undefined }),
    row('a later version asking for sampling, with a tail',
      (tid, sid) => [['traceparent', `01-${tid}-${sid}-01-x${A6K}`]], { continued: true, tracestate: undefined }),
    row('version 00 with a tail is invalid: the trace restarts and its tracestate is dropped',
      (tid, sid) => [['traceparent', `00-${tid}-${sid}-01-extra`], ['tracestate', 'vendor=x']], { continued: false, tracestate: undefined }),
    row('version ff is invalid: the trace restarts',
      (tid, sid) => [['traceparent', `ff-${tid}-${sid}-01`], ['tracestate', 'vendor=x']], { continued: false, tracestate: undefined }),
    row('no traceparent: a tracestate of no trace is dropped (§3.3.1)',
      () => [['tracestate', 'vendor=orphan']], { continued: false, tracestate: undefined }),
    row('6,000 characters of garbage tracestate: none sent',
      (tid, sid) => [valid(tid, sid), ['tracestate', A6K]], { continued: true, tracestate: undefined }),
    row('200 members: the first 32 (§3.3)',
      (tid, sid) => [valid(tid, sid), ['tracestate', members.join(',')]], { continued: true, tracestate: members.slice(0, 32).join(',') }),
    row('invalid members dropped, valid ones kept',
      (tid, sid) => [valid(tid, sid), ['tracestate', `ok=1,BAD KEY=2,=3,k=${'z'.repeat(300)}`]], { continued: true, tracestate: 'ok=1' }),
    row('over 512 characters: a member that does not fit is left out',
      (tid, sid) => [valid(tid, sid), ['tracestate', `${big('a', 'x')},${big('b', 'y')},c=1`]], { continued: true, tracestate: `${big('a', 'x')},c=1` }),
    row('two tracestate headers are one list, whitespace around members dropped (§3.3.1)',
      (tid, sid) => [valid(tid, sid), ['tracestate', 'a=1 , b=2'], ['tracestate', 'c=3']], { continued: true, tracestate: 'a=1,b=2,c=3' }),
    row('an empty tracestate is not sent',
      (tid, sid) => [valid(tid, sid), ['tracestate', '']], { continued: true, tracestate: undefined }),
    row('control: a valid tracestate goes upstream as sent',
      (tid, sid) => [valid(tid, sid), ['tracestate', 'vendor=kept,other@tenant=v']], { continued: true, tracestate: 'vendor=kept,other@tenant=v' }),
    row('baggage (W3C Baggage) is not the gateway\'s: it passes as sent',
      (tid, sid) => [valid(tid, sid), ['baggage', 'userId=alice,session=abc']], { continued: true, tracestate: undefined, baggage: 'userId=alice,session=abc' }),
  ]
}

for (const ratio of [0, 1]) {
  t.test(`sampleRatio ${ratio}: the upstream's trace headers are the gateway's writing, never the client's bytes`, async (t) => {
    const { upstream, receiver } = await setup(t)
    const gw = await start(t, traced(receiver, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'public' }], { sampleRatio: ratio }))
    const table = rows()
    for (const [i, row] of table.entries()) t.equal((await raw(gw.url, `/api/${i}`, { headers: row.headers })).status, 200, `${row.name}: proxied`)
    await gw.close() // flushes the spans
    t.equal(upstream.requests.length, table.length)
    for (const sent of upstream.requests) {
      const row = table[Number(sent.url.split('/')[2])]!
      const names = sent.rawHeaders.filter((_, i) => i % 2 === 0).map(h => h.toLowerCase())
      t.equal(names.filter(h => h === 'traceparent').length, 1, `${row.name}: one traceparent`)
      t.ok(names.filter(h => h === 'tracestate').length <= 1, `${row.name}: at most one tracestate`)
      t.match(sent.headers.traceparent, VERSION_00, `${row.name}: traceparent version 00, nothing after the flags`)
      if (!VERSION_00.test(String(sent.headers.traceparent))) continue
      const p = parseTraceparent(sent.headers.traceparent)
      t.equal(p.flags, ratio === 1 ? '01' : '00', `${row.name}: flags ${ratio === 1 ? '01' : '00'}`)
      t.equal(sent.headers.tracestate, row.tracestate, `${row.name}: tracestate ${row.tracestate === undefined ? 'absent' : 'as parsed'}`)
      t.equal(sent.headers.baggage, row.baggage, `${row.name}: baggage`)
      if (row.continued) t.equal(p.traceId, row.traceId, `${row.name}: the client's trace continued`)
      else t.not(p.traceId, row.traceId, `${row.name}: a trace started here`)
      if (ratio === 0) {
        if (row.continued) t.equal(p.spanId, row.spanId, `${row.name}: unsampled, the client's span stays the parent`)
        continue
      }
      // sampled: the upstream's parent is the gateway's exported client span, with the same tracestate
      const span = receiver.spans.find((s: ReceivedSpan) => s.spanId === p.spanId && s.kind === CLIENT)
      t.ok(span, `${row.name}: the upstream's parent is an exported client span`)
      t.equal(span?.traceState, row.tracestate ?? '', `${row.name}: the upstream got the tracestate the span carries`)
    }
  })
}

t.test('requests that share a client\'s x-request-id (no span of the gateway): their trace headers are rewritten too', async (t) => {
  const { upstream, receiver } = await setup(t, (req, res) => { setTimeout(() => res.end(req.url), 60) })
  const gw = await start(t, traced(receiver, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'public' }], { sampleRatio: 1 }))
  const clients = Array.from({ length: 4 }, () => newTraceparent(true))
  await Promise.all(clients.map((c, i) => raw(gw.url, `/api/${i}`, {
    headers: { traceparent: `cc-${c.traceId}-${c.spanId}-01-${A6K}`, tracestate: `ok=1,${A6K}`, 'x-request-id': 'same-id' },
  })))
  await gw.close()
  t.equal(upstream.requests.length, clients.length)
  let unattributed = 0
  for (const sent of upstream.requests) {
    const client = clients[Number(sent.url.split('/')[2])]!
    t.match(sent.headers.traceparent, VERSION_00, `${sent.url}: traceparent version 00, the tail dropped`)
    if (!VERSION_00.test(String(sent.headers.traceparent))) continue
    const p = parseTraceparent(sent.headers.traceparent)
    t.equal(p.traceId, client.traceId, `${sent.url}: version 00 in the client's trace`)
    t.equal(sent.headers.tracestate, 'ok=1', `${sent.url}: the tracestate as parsed`)
    if (p.spanId !== client.spanId) continue
    unattributed++
    t.equal(p.flags, '00', `${sent.url}: no span of the gateway, flags 00 (the client's 01 is not followed)`)
  }
  t.ok(unattributed >= clients.length - 1, 'all but perhaps the first could not be told apart')
})
