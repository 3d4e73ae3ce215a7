import fp from 'fastify-plugin'

/**
 * One structured line per request with the access decision (STYLE habit 9):
 * route, granted, reason, sub, status, ms. Never the token, a cookie or the query string
 * (which may carry secrets). Written through pino's asynchronous destination.
 */
export default fp(async function accessLog (app) {
  app.addHook('onResponse', (request, reply, done) => {
    const auth = request.auth
    const url = request.url
    const q = url.indexOf('?')
    request.log.info({
      route: auth?.route ?? null,
      granted: auth?.granted ?? false,
      reason: auth?.reason ?? 'unrouted',
      sub: auth?.token?.sub ?? null,
      method: request.method,
      path: q === -1 ? url : url.slice(0, q),
      status: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 100) / 100,
    }, 'decision')
    done()
  })
}, { name: 'portcullis-access-log', fastify: '5.x', dependencies: ['portcullis-auth'] })
