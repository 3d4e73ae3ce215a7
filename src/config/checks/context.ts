import { resolve } from 'node:path'
import type { ConfigProblem } from '../../errors.js'
import { fileProblem, isFileName, readBoundedFile } from '../read-file.js'

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

/**
 * A file relative to the config file, a regular file of at most `maxBytes` (read-file.ts); a
 * problem at `path` when it cannot be used. `instead` names the inline sibling of the field
 * (`use privateKey`) for a value that is key text rather than a file name.
 */
export function readConfigBytes (ctx: CheckContext, file: string, path: string, maxBytes: number, instead?: string): Buffer | undefined {
  if (!isFileName(file)) {
    problem(ctx, path, fileProblem(file, undefined, instead))
    return undefined
  }
  try {
    return readBoundedFile(resolve(ctx.baseDir, file), maxBytes)
  } catch (err) {
    problem(ctx, path, fileProblem(file, err, instead))
    return undefined
  }
}

/** readConfigBytes as UTF-8 text (PEM files) */
export function readConfigFile (ctx: CheckContext, file: string, path: string, maxBytes: number, instead?: string): string | undefined {
  return readConfigBytes(ctx, file, path, maxBytes, instead)?.toString('utf8')
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
