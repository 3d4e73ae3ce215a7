import { HTTP_METHODS } from '../../config/schema.js'
import type { AuthMode, RouteConfig, ScopeRequirement } from '../config/types.js'

/** A route's policy, compiled once at boot and bound into the route's guard hook (plugins/auth.ts). */
export interface RoutePolicy {
  readonly name: string
  readonly auth: AuthMode
  /** undefined: every method is allowed */
  readonly methods: ReadonlySet<string> | undefined
  /** the Allow header of a 405 */
  readonly allow: string
  /** method → requirement (the method's own rule, else "*"); absent: no scope needed */
  readonly scopes: ReadonlyMap<string, CompiledRequirement>
}

export interface CompiledRequirement {
  readonly allOf: readonly string[]
  readonly anyOf: readonly string[]
  /** the `scope` attribute of a 403 (RFC 6750 §3): the scopes that would satisfy it */
  readonly challenge: string
}

export function compilePolicy (route: RouteConfig): RoutePolicy {
  const scopes = new Map<string, CompiledRequirement>()
  const fallback = route.scopes['*']
  for (const method of HTTP_METHODS) {
    // HEAD is a GET without body: it needs what GET needs unless it has its own rule
    const rule = route.scopes[method] ?? (method === 'HEAD' ? route.scopes.GET : undefined) ?? fallback
    if (rule !== undefined) scopes.set(method, compile(rule))
  }
  return {
    name: route.name,
    auth: route.auth,
    methods: route.methods === undefined ? undefined : new Set(route.methods),
    allow: (route.methods ?? HTTP_METHODS).join(', '),
    scopes,
  }
}

function compile (rule: ScopeRequirement): CompiledRequirement {
  return { allOf: rule.allOf, anyOf: rule.anyOf, challenge: [...rule.allOf, ...rule.anyOf].join(' ') }
}

/** True when the granted scopes satisfy the requirement: all of allOf, and one of anyOf if any. */
export function satisfies (requirement: CompiledRequirement, granted: ReadonlySet<string>): boolean {
  for (const s of requirement.allOf) if (!granted.has(s)) return false
  if (requirement.anyOf.length === 0) return true
  for (const s of requirement.anyOf) if (granted.has(s)) return true
  return false
}
