import t from 'tap'
import { raw } from '../fixtures/gateway.js'
import { newTraceparent, parseTraceparent, setup, start, traced } from '../fixtures/tracing.js'

// A client's `traceparent` flag 01 forced a span pair per request whatever sampleRatio said
// (~16 µs of span work and two exported spans each, bench/micro-metrics.ts): any client could
// trace every request it sent into the collector, and flag 00 kept a client's requests out of
// traces an operator asked for at ratio 1. The flag is now followed only from a trusted proxy
// (server.trustProxy); from anyone else sampleRatio decides, and the client's trace is still
// continued. Real gateway, real OTLP/HTTP receiver, recording upstream.

t.test('ratio 0: a client cannot force its requests into the traces, nor the upstream to sample them', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'public' }], { sampleRatio: 0 }))
  const forced = Array.from({ length: 20 }, () => newTraceparent(true))
  for (const [i, c] of forced.entries()) {
    const res = await raw(gw.url, `/api/${i}`, { headers: { traceparent: c.header, tracestate: 'vendor=kept' } })
    t.equal(res.status, 200)
  }
  await gw.close()
  t.equal(receiver.spans.length, 0, 'no span exported for 20 requests asking to be sampled')
  t.equal(upstream.requests.length, 20)
  for (const sent of upstream.requests) {
    const i = Number(sent.url.split('/')[2])
    const p = parseTraceparent(sent.headers.traceparent)
    t.same(p, { traceId: forced[i]!.traceId, spanId: forced[i]!.spanId, flags: '00' }, `request ${i}: the client's trace continued, flags 00 (nothing recorded here)`)
    t.equal(sent.headers.tracestate, 'vendor=kept', 'its tracestate with it')
  }
})

t.test('ratio 1: a client cannot keep its requests out of the traces', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'public' }], { sampleRatio: 1 }))
  const declined = newTraceparent(false)
  const res = await raw(gw.url, '/api/hidden', { headers: { traceparent: declined.header } })
  t.equal(res.status, 200)
  await gw.close()
  const p = parseTraceparent(upstream.requests[0]!.headers.traceparent)
  t.equal(p.traceId, declined.traceId, 'the client\'s trace continued')
  t.equal(p.flags, '01', 'sampled by the gateway')
  t.equal(receiver.spans.length, 2, 'its request span and upstream span exported')
  t.ok(receiver.spans.every(s => s.traceId === declined.traceId))
})

t.test('behind a trusted proxy the flag is followed both ways', async (t) => {
  const { upstream, receiver } = await setup(t)
  const gw = await start(t, traced(receiver, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'public' }], { sampleRatio: 0 }, { server: { trustProxy: ['127.0.0.1'] } }))
  const sampled = newTraceparent(true)
  await raw(gw.url, '/api/sampled', { headers: { traceparent: sampled.header } })
  await gw.close()
  t.equal(parseTraceparent(upstream.requests[0]!.headers.traceparent).flags, '01')
  t.equal(receiver.spans.length, 2, 'the trusted proxy\'s decision recorded')
})
