// The upstream every configuration proxies to: a small Fastify server.
// - any GET returns the same ~100 bytes of JSON (the "limit" when loaded directly);
// - GET …/__echo returns the request headers it received (used by the runner's checks:
//   identity headers injected, Authorization not forwarded);
// - POST with application/octet-stream streams the request body back (the 1 MB body check).
// Fastify and its version come from the product's own node_modules on purpose.
import Fastify from 'fastify'

const port = Number(process.env.PORT)
const host = '127.0.0.1'

const app = Fastify({ logger: false, keepAliveTimeout: 120_000 })
const BODY = JSON.stringify({ ok: true, service: 'orders', items: [{ id: 1, sku: 'A-100', qty: 2 }], note: 'benchmark' })

app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload))

app.get('/*', (request, reply) => {
  if (request.url.includes('/__echo')) return reply.send({ headers: request.headers })
  reply.header('content-type', 'application/json; charset=utf-8').send(BODY)
})
app.post('/*', (request, reply) => {
  if (request.headers['content-type'] === 'application/octet-stream') {
    reply.header('content-type', 'application/octet-stream').send(request.body)
    return
  }
  reply.header('content-type', 'application/json; charset=utf-8').send(BODY)
})

await app.listen({ port, host })
process.stdout.write(`upstream listening on ${host}:${port} (${BODY.length} bytes)\n`)
for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => { app.close().finally(() => process.exit(0)) })
