import { HTTP_METHODS, type GatewayConfig } from '../config/types.js'
import { ErrorCode, GatewayError } from '../errors.js'
import { ruleFor, describeRule } from '../check.js'
import { Reason } from '../pipeline/auth-state.js'
import { type CompiledRoute, type Runtime } from '../runtime.js'
import type { Explanation, Refusal } from './explain.js'

/** What `explain` shows: the route and rule, refusals, the closest prefixes (redaction: redact.ts). */

export function describeRoute (ex: Explanation, runtime: Runtime, route: CompiledRoute | undefined, method: string): void {
  if (route === undefined) return
  const r = route.config
  ex.route = { name: r.name, prefix: r.prefix, upstream: r.upstreamOrigin, rewritePrefix: r.rewritePrefix }
  const compiled = route.policy.scopes.get(method)
  let needs: string
  if (!(HTTP_METHODS as readonly string[]).includes(method)) needs = 'no token satisfies it (the gateway never forwards this method)'
  else if (r.auth === 'public') needs = 'nothing (public: no token is looked at)'
  else if (compiled === undefined) needs = r.auth === 'optional' ? 'nothing (optional: a token, if sent, must be valid)' : 'any valid token'
  else if (compiled.deny === true) needs = 'no token satisfies it (the method has no rule)'
  else needs = describeRule(compiled)
  const from = r.scopes[method] !== undefined ? method : method === 'HEAD' && r.scopes.GET !== undefined ? 'GET' : r.scopes['*'] !== undefined ? '*' : undefined
  ex.rule = {
    auth: r.auth,
    methods: r.methods === undefined ? '*' : [...r.methods],
    scope: { method, from: ruleFor(r.scopes, method) === undefined ? undefined : from, needs },
    issuers: r.auth === 'public' ? [] : [...route.policy.issuers],
    cors: route.cors && runtime.cors !== undefined,
    websocket: r.websocket,
    assertion: r.assertionAudience,
  }
}

export function refusal (err: unknown): Refusal {
  if (err instanceof GatewayError) {
    const allow = (err as GatewayError & { allow?: string }).allow
    return { status: err.statusCode, reason: err.code, message: err.message, ...(err.scope === undefined ? {} : { scope: err.scope }), ...(allow === undefined ? {} : { allow }) }
  }
  return { status: 500, reason: ErrorCode.internal, message: (err as Error).message }
}

export function reasonText (reason: string): string {
  if (reason === Reason.granted) return 'the token satisfies the route'
  if (reason === Reason.anonymous) return 'no token, and the route does not need one (optional)'
  if (reason === Reason.public) return 'a public route: no token is looked at'
  return reason
}

/** the route prefixes nearest to a path nobody serves, by edit distance over as many segments */
export function closestRoutes (config: GatewayConfig, target: string): Array<{ name: string, prefix: string }> {
  const q = target.indexOf('?')
  const segments = (q === -1 ? target : target.slice(0, q)).toLowerCase().split('/')
  return config.routes
    .map(r => {
      const prefix = r.prefix.toLowerCase()
      const comparable = segments.slice(0, prefix.split('/').length).join('/')
      return { name: r.name, prefix: r.prefix, distance: editDistance(prefix, comparable) }
    })
    .filter(r => r.distance <= Math.max(3, Math.floor(r.prefix.length / 2)))
    .sort((a, b) => a.distance - b.distance)
    .slice(0, 3)
    .map(({ name, prefix }) => ({ name, prefix }))
}

function editDistance (a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j)
  for (let i = 1; i <= a.length; i++) {
    const row = [i]
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min((prev[j] as number) + 1, (row[j - 1] as number) + 1, (prev[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1))
    }
    prev = row
  }
  return prev[b.length] as number
}
