/**
 * An example upstream service behind portcullis: the "orders" API, verifying the signed
 * identity assertion the gateway sends with the upstream kit, and reading the caller from
 * `request.user`. Outside this repository, import the kit as `portcullis/upstream`.
 */
import Fastify, { type FastifyInstance } from 'fastify'
import portcullis, { requireScopes, type PortcullisUpstreamOptions } from '../../src/upstream/index.js'

export interface OrdersOptions {
  /** the gateway's JWKS: {gateway}/.well-known/jwks.json */
  jwksUrl: string
  /** the gateway's tokens.issuer */
  issuer: string
  /** this route's assertion.audience in gateway.yaml */
  audience: string
  /** the gateway's tokens.algorithm */
  algorithm: string
  /** http to a loopback gateway (a local try-out); https otherwise */
  allowInsecureHttp?: boolean
  logger?: boolean
}

interface Order { id: string, owner: string, item: string }

export async function buildOrders (opts: OrdersOptions): Promise<FastifyInstance> {
  const app = Fastify({ logger: opts.logger ?? false })
  const kit: PortcullisUpstreamOptions = {
    jwksUrl: opts.jwksUrl,
    issuer: opts.issuer,
    audience: opts.audience,
    algorithms: [opts.algorithm],
    allowInsecureHttp: opts.allowInsecureHttp,
    // verify where we say (below), so the health check needs no assertion
    global: false,
  }
  await app.register(portcullis, kit)

  // for the orchestrator: up, and whether the gateway's keys are at hand
  app.get('/healthz', async () => ({ status: 'ok', gatewayKeys: app.portcullisUpstream.keys?.state }))

  const orders: Order[] = []
  await app.register(async (api) => {
    // every route in here needs a valid assertion: request.user is the verified caller
    api.addHook('onRequest', api.verifyAssertion)

    api.get('/', async (request) => ({
      caller: { sub: request.user.sub, scopes: request.user.scopes, issuedBy: request.user.token_iss },
      orders: orders.filter(o => o.owner === request.user.sub),
    }))

    // the gateway already enforced the route's scopes; this one is finer, in the service
    api.post('/', { preHandler: requireScopes('orders:write') }, async (request, reply) => {
      const order: Order = { id: String(orders.length + 1), owner: request.user.sub, item: String((request.body as { item?: unknown } | undefined)?.item ?? '') }
      orders.push(order)
      reply.code(201)
      return order
    })
  }, { prefix: '/orders' })
  return app
}
