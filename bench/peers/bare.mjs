// bare: Fastify + @fastify/http-proxy, no auth, no logging — the floor of our own stack.
// Uses the product's own fastify and @fastify/http-proxy (root node_modules), so it moves with them.
import Fastify from 'fastify'
import proxy from '@fastify/http-proxy'

const port = Number(process.env.PORT)
const upstream = process.env.UPSTREAM

const app = Fastify({ logger: false })
await app.register(proxy, { upstream, prefix: '/api', http2: false })
await app.listen({ port, host: '127.0.0.1' })
process.stdout.write(`bare listening on ${port} → ${upstream}\n`)
for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => { app.close().finally(() => process.exit(0)) })
