/**
 * Runs the example orders service:
 *
 *   GATEWAY_URL=http://127.0.0.1:8080 GATEWAY_ISSUER=https://auth.example.test \
 *   AUDIENCE=https://orders.internal ALGORITHM=EdDSA PORT=4001 \
 *   node --import tsx examples/upstream/server.ts
 *
 * and in gateway.yaml (see README.md beside this file):
 *
 *   identity:
 *     assertion: { header: x-portcullis-assertion, lifetime: 5m }
 *   routes:
 *     - { name: orders, prefix: /api/orders, upstream: http://127.0.0.1:4001, rewritePrefix: /orders,
 *         auth: required, scopes: { GET: [orders:read], "*": [orders:write] },
 *         assertion: { audience: https://orders.internal } }
 */
import { buildOrders } from './app.js'

const env = (name: string, fallback: string): string => process.env[name] ?? fallback
const gateway = env('GATEWAY_URL', 'http://127.0.0.1:8080')
const jwksUrl = env('GATEWAY_JWKS_URL', `${gateway}/.well-known/jwks.json`)

const app = await buildOrders({
  jwksUrl,
  issuer: env('GATEWAY_ISSUER', 'https://auth.example.test'),
  audience: env('AUDIENCE', 'https://orders.internal'),
  algorithm: env('ALGORITHM', 'EdDSA'),
  // only for a gateway on this machine; the kit refuses http to anywhere else
  allowInsecureHttp: new URL(jwksUrl).protocol === 'http:',
  logger: true,
})
await app.listen({ host: env('HOST', '127.0.0.1'), port: Number(env('PORT', '4001')) })
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => { app.close().then(() => process.exit(0), () => process.exit(1)) })
