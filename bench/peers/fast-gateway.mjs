// fast-gateway 5 (restana + fast-proxy-lite) with a fast-jwt check as a global middleware:
// algorithms pinned, iss/aud checked, fast-jwt's own verified-token cache on (its best form).
// Same behaviour as the portcullis route: 401, scope check, identity headers injected,
// client x-user-* and Authorization not forwarded.
import gateway from 'fast-gateway'
import { createVerifier } from 'fast-jwt'
import { authSettings, hasScope } from './auth-env.mjs'

const port = Number(process.env.PORT)
const upstream = process.env.UPSTREAM
const s = authSettings()
const verify = createVerifier({
  key: s.keyText,
  algorithms: [s.alg],
  allowedIss: s.issuer,
  allowedAud: s.audience,
  requiredClaims: ['exp', 'sub'],
  cache: true,
})

function deny (res, status, code) {
  res.statusCode = status
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ code }))
}

function auth (req, res, next) {
  const h = req.headers.authorization
  if (typeof h !== 'string' || !h.startsWith('Bearer ')) return deny(res, 401, 'missing_token')
  let claims
  try {
    claims = verify(h.slice(7))
  } catch {
    return deny(res, 401, 'invalid_token')
  }
  if (!hasScope(claims.scope, s.scope)) return deny(res, 403, 'insufficient_scope')
  for (const name of Object.keys(req.headers)) if (name.startsWith('x-user-')) delete req.headers[name]
  delete req.headers.authorization
  req.headers['x-user-id'] = String(claims.sub)
  req.headers['x-user-scopes'] = String(claims.scope)
  next()
}

const server = gateway({
  middlewares: [auth],
  enableServicesEndpoint: false,
  routes: [{ prefix: '/api', target: upstream }],
})
await server.start(port, '127.0.0.1')
process.stdout.write(`fast-gateway listening on ${port} → ${upstream} (${s.alg})\n`)
for (const sig of ['SIGTERM', 'SIGINT']) process.once(sig, () => { server.close().finally(() => process.exit(0)) })
