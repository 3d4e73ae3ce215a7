// express: Express + express-jwt + http-proxy-middleware, in its best form:
// a pre-parsed key (KeyObject), algorithms pinned, a keep-alive agent to the upstream.
// Same behaviour as the portcullis route: 401 without a valid token, scope check,
// identity headers injected, client x-user-* and Authorization not forwarded.
// jsonwebtoken 9 (under express-jwt) has no EdDSA: the runner skips that pairing.
import http from 'node:http'
import express from 'express'
import { expressjwt } from 'express-jwt'
import { createProxyMiddleware } from 'http-proxy-middleware'
import { authSettings, hasScope } from './auth-env.mjs'

const port = Number(process.env.PORT)
const upstream = process.env.UPSTREAM
const s = authSettings()

const app = express()
app.disable('x-powered-by')
app.disable('etag')

app.use('/api', expressjwt({ secret: s.keyObject, algorithms: [s.alg], issuer: s.issuer, audience: s.audience }))
app.use('/api', (req, res, next) => {
  if (!hasScope(req.auth?.scope, s.scope)) {
    res.status(403).json({ code: 'insufficient_scope' })
    return
  }
  next()
})
app.use('/api', createProxyMiddleware({
  target: upstream,
  agent: new http.Agent({ keepAlive: true, maxSockets: 256 }),
  xfwd: true,
  on: {
    proxyReq (proxyReq, req) {
      for (const name of proxyReq.getHeaderNames()) if (name.startsWith('x-user-')) proxyReq.removeHeader(name)
      proxyReq.removeHeader('authorization')
      proxyReq.setHeader('x-user-id', String(req.auth.sub))
      proxyReq.setHeader('x-user-scopes', String(req.auth.scope))
    },
  },
}))
app.use((err, _req, res, _next) => {
  res.status(err.status ?? 500).json({ code: err.code ?? 'error' })
})

const server = http.createServer({ keepAliveTimeout: 72_000 }, app)
server.listen(port, '127.0.0.1', () => process.stdout.write(`express listening on ${port} → ${upstream} (${s.alg})\n`))
for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => { server.close(); process.exit(0) })
