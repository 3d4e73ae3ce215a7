import type { ConfigProblem } from '../errors.js'

const PLACEHOLDER = /\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}/g

/**
 * Resolves `${VAR}` and `${VAR:-default}` inside string values of a parsed YAML tree.
 * Done after parsing (not on the text) so an environment value can never inject YAML.
 * An unset `${VAR}` without default is a problem at its path.
 */
export function resolvePlaceholders (
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  problems: ConfigProblem[],
  path = ''
): unknown {
  if (typeof value === 'string') {
    return value.replace(PLACEHOLDER, (_, name: string, fallback: string | undefined) => {
      const v = env[name]
      if (v !== undefined && v !== '') return v
      if (fallback !== undefined) return fallback
      problems.push({ path, message: `environment variable ${name} is not set (use \${${name}:-default} for a default)` })
      return ''
    })
  }
  if (Array.isArray(value)) return value.map((v, i) => resolvePlaceholders(v, env, problems, `${path}/${i}`))
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {}
    for (const [k, v] of Object.entries(value)) out[k] = resolvePlaceholders(v, env, problems, `${path}/${k}`)
    return out
  }
  return value
}
