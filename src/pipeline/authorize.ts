import { HTTP_METHODS } from '../../config/schema.js'
import type { AuthMode, RouteConfig, ScopeRequirement } from '../config/types.js'
import { ErrorCode, GatewayError, invalidToken } from '../errors.js'
import type { VerifiedToken } from '../tokens/verified-token.js'

/**
 * The authorize stage: a route's policy, compiled once at boot (or reload), and the check
 * of one request against it — the method, the issuer of its token, the scopes.
 */
export interface RoutePolicy {
  readonly name: string
  readonly auth: AuthMode
  /** undefined: every method is allowed */
  readonly methods: ReadonlySet<string> | undefined
  /** the Allow header of a 405, and the methods a CORS preflight is told about */
  readonly allow: string
  /** method → requirement (the method's own rule, else "*"); absent: any valid token */
  readonly scopes: ReadonlyMap<string, CompiledRequirement>
  /** names of the issuers whose tokens the route accepts */
  readonly issuers: ReadonlySet<string>
}

export interface CompiledRequirement {
  readonly allOf: readonly string[]
  readonly anyOf: readonly string[]
  /** the `scope` attribute of a 403 (RFC 6750 §3): the scopes that would satisfy it */
  readonly challenge: string
  /** no token satisfies it: a method the rule set leaves uncovered (fail closed) */
  readonly deny?: boolean
}

const DENY: CompiledRequirement = Object.freeze({ allOf: [], anyOf: [], challenge: '', deny: true })

export function compilePolicy (route: RouteConfig): RoutePolicy {
  const scopes = new Map<string, CompiledRequirement>()
  const fallback = route.scopes['*']
  const hasRules = Object.keys(route.scopes).length > 0
  for (const method of HTTP_METHODS) {
    // HEAD is a GET without body: it needs what GET needs unless it has its own rule
    const rule = route.scopes[method] ?? (method === 'HEAD' ? route.scopes.GET : undefined) ?? fallback
    // a rule set that leaves a method uncovered is refused at boot (config checks); should one
    // get here anyway, the method is denied, never allowed by omission
    if (rule !== undefined) scopes.set(method, compile(rule))
    else if (hasRules) scopes.set(method, DENY)
  }
  return {
    name: route.name,
    auth: route.auth,
    methods: route.methods === undefined ? undefined : new Set(route.methods),
    allow: (route.methods ?? HTTP_METHODS).join(', '),
    scopes,
    issuers: new Set(route.issuers),
  }
}

function compile (rule: ScopeRequirement): CompiledRequirement {
  return { allOf: rule.allOf, anyOf: rule.anyOf, challenge: [...rule.allOf, ...rule.anyOf].join(' ') }
}

/** True when the granted scopes satisfy the requirement: all of allOf, and one of anyOf if any. */
export function satisfies (requirement: CompiledRequirement, granted: ReadonlySet<string>): boolean {
  if (requirement.deny === true) return false
  for (const s of requirement.allOf) if (!granted.has(s)) return false
  if (requirement.anyOf.length === 0) return true
  for (const s of requirement.anyOf) if (granted.has(s)) return true
  return false
}

/** 405 unless the route allows the method (checked before any token is looked at) */
export function checkMethod (policy: RoutePolicy, method: string): void {
  if (policy.methods !== undefined && !policy.methods.has(method)) {
    throw new GatewayError(ErrorCode.methodNotAllowed, 405, `${method} is not allowed on this route`)
  }
}

/** throws 401 for a token from an issuer the route does not accept, 403 for a missing scope */
export function authorize (policy: RoutePolicy, method: string, token: VerifiedToken): void {
  if (!policy.issuers.has(token.issuer)) {
    throw invalidToken(ErrorCode.tokenIssuerNotAllowed, 'this route does not accept tokens from this issuer')
  }
  const requirement = policy.scopes.get(method)
  if (requirement !== undefined && !satisfies(requirement, token.scopes)) {
    throw new GatewayError(ErrorCode.insufficientScope, 403, 'the access token lacks a scope this route requires', {
      oauthError: 'insufficient_scope',
      scope: requirement.challenge,
    })
  }
}
