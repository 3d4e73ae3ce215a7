import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import type { ConfigProblem } from '../../errors.js'

/**
 * What every `checkX()` gets: where relative files resolve, and the list it reports into.
 * A check reports each problem as `path: message` and returns the normalized part (or a
 * placeholder when the part is unusable); it never throws for bad input. When the schema
 * already failed, a check may meet values of the wrong type and throw: normalize.ts guards
 * every check, so one malformed part silences only its own check.
 */
export interface CheckContext {
  baseDir: string
  source: string
  problems: ConfigProblem[]
  /** for `workers: auto` */
  cores: number
}

// validated by the schema before it gets here
export type Raw = Record<string, any>

export function problem (ctx: CheckContext, path: string, message: string): void {
  ctx.problems.push({ path, message })
}

/** a file relative to the config file; a problem at `path` when unreadable */
export function readConfigFile (ctx: CheckContext, file: string, path: string): string | undefined {
  try {
    return readFileSync(resolve(ctx.baseDir, file), 'utf8')
  } catch (err) {
    problem(ctx, path, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
    return undefined
  }
}

/** loopback hosts, where plain http cannot be intercepted on the network */
/**
 * Runs a part of a check on its own: if it meets a value of the wrong shape (possible only
 * when the schema already failed) its partial problems are dropped and the caller goes on.
 */
export function guarded<T> (ctx: CheckContext, fn: () => T): T | undefined {
  const before = ctx.problems.length
  try {
    return fn()
  } catch {
    ctx.problems.length = before
    return undefined
  }
}
