/** RFC 6749 §3.3: a scope token — printable ASCII but space, `"` and `\` */
export const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/

/**
 * The scopes a claim value grants: a space-separated string, or — from identity providers
 * (`scp`, Keycloak roles, groups) — an array of strings (`arrays`). An element that is not a
 * scope token (a role or group name with a space, a tab, non-ASCII) grants nothing: upstreams
 * read scopes space-separated (`x-user-scopes`, the assertion's `scope`), where an element
 * `"display name orders:admin"` became three scopes, one of them a scope the gateway had
 * refused (fix-idp-review). undefined: a value that is neither (the caller refuses the token).
 */
export function scopeSet (value: unknown, arrays: boolean): ReadonlySet<string> | undefined {
  if (value === undefined || value === null) return new Set()
  if (typeof value === 'string') return new Set(value.split(' ').filter(s => SCOPE_TOKEN.test(s)))
  if (arrays && Array.isArray(value) && value.every(v => typeof v === 'string')) return new Set((value as string[]).filter(s => SCOPE_TOKEN.test(s)))
  return undefined
}
