import { createHash } from 'node:crypto'
import { dirname, resolve } from 'node:path'
import { Ajv, type ErrorObject } from 'ajv'
import { LineCounter, parseDocument, isNode, visit, type Document, type YAMLError } from 'yaml'
import { configSchema, DURATION_PATTERN } from '../../config/schema.js'
import { durationMs } from './duration.js'
import { ConfigError, type ConfigProblem } from '../errors.js'
import { resolvePlaceholders } from './env.js'
import { normalize } from './normalize.js'
import { fileProblem, isFileName, MAX_CONFIG_FILE_BYTES, readBoundedFile } from './read-file.js'
import type { GatewayConfig } from './types.js'

export interface LoadOptions {
  /** environment for ${VAR} placeholders; the loader is the only reader of process.env */
  env?: Readonly<Record<string, string | undefined>>
  /** directory that relative key files resolve against; default: the config file's */
  baseDir?: string
  /** for `server.workers: auto`; default: this machine's cores */
  cores?: number
}

const ajv = new Ajv({ allErrors: true, useDefaults: true, coerceTypes: true, strict: false, verbose: true })
const DURATION = new RegExp(DURATION_PATTERN)
// every Duration's upper bound (config/schema.ts, fix-duration-overflow); a number of seconds
// must also be finite (YAML reads 1e400 and .inf as Infinity)
ajv.addKeyword({
  keyword: 'maxDuration',
  schemaType: 'string',
  validate: (max: string, data: unknown): boolean => {
    if (typeof data === 'number') return Number.isFinite(data) && data * 1000 <= durationMs(max)
    if (typeof data !== 'string' || !DURATION.test(data)) return true // the pattern's problem
    return durationMs(data) <= durationMs(max)
  },
})
const validate = ajv.compile(configSchema)

/**
 * yaml's own messages quote the text around the fault ("Unexpected double-quoted-scalar token in
 * YAML stream: \"…\"", "Could not resolve tag: !<…>"): a stray bracket on one line put the next
 * line's admin token or signing secret into the reload answer, the error log and `check`. A
 * syntax problem is told by its kind, line and column, never by the text.
 */
const YAML_SYNTAX: Partial<Record<YAMLError['code'], string>> = {
  ALIAS_PROPS: 'an alias cannot carry an anchor or a tag',
  BAD_ALIAS: 'a malformed alias (a value starting with `*`; quote it)',
  BAD_DIRECTIVE: 'a malformed YAML directive',
  BAD_DQ_ESCAPE: 'an invalid escape in a double-quoted string',
  BAD_INDENT: 'wrong indentation',
  BAD_PROP_ORDER: 'an anchor or a tag in the wrong place',
  BAD_SCALAR_START: 'a plain value cannot start with this character; quote it',
  BLOCK_AS_IMPLICIT_KEY: 'a block collection used as a key',
  BLOCK_IN_FLOW: 'block syntax inside a flow collection ({ } or [ ])',
  DUPLICATE_KEY: 'a key given twice in one mapping',
  KEY_OVER_1024_CHARS: 'an implicit key longer than 1024 characters',
  MISSING_CHAR: 'a closing quote or bracket is missing',
  MULTILINE_IMPLICIT_KEY: 'a key spread over several lines',
  MULTIPLE_ANCHORS: 'two anchors on one value',
  MULTIPLE_DOCS: 'more than one YAML document in the file',
  MULTIPLE_TAGS: 'two tags on one value',
  NON_STRING_KEY: 'a key that is not a string',
  RESOURCE_EXHAUSTION: 'aliases expand too far',
  TAB_AS_INDENT: 'a tab used for indentation',
  TAG_RESOLVE_FAILED: 'an unknown tag (a value starting with `!`; quote it)',
  UNEXPECTED_TOKEN: 'unexpected text (check quotes, brackets and indentation)',
  BAD_COLLECTION_TYPE: 'a collection of the wrong kind for its tag',
}

/** Reads, resolves, validates and freezes a gateway.yaml. Throws ConfigError listing every problem. */
export function loadConfigFile (file: string, options: LoadOptions = {}): GatewayConfig {
  // the same rule as for the files the configuration names (read-file.ts): bounded, regular, and
  // a value that is no file name is never quoted, not even in the heading
  if (!isFileName(file)) throw new ConfigError([{ path: '', message: fileProblem(file, undefined) }], 'the configuration file')
  let text: string
  try {
    text = readBoundedFile(file, MAX_CONFIG_FILE_BYTES).toString('utf8')
  } catch (err) {
    throw new ConfigError([{ path: '', message: fileProblem(file, err) }], file)
  }
  return loadConfigText(text, { baseDir: dirname(resolve(file)), ...options }, file)
}

export function loadConfigText (text: string, options: LoadOptions = {}, source = 'gateway.yaml'): GatewayConfig {
  const env = options.env ?? process.env
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const problems: ConfigProblem[] = []
  // yaml reports an unknown tag (`token: !secret abc`), an ambiguous alias or an unknown directive
  // as a warning, and loads the value as if it were not there: here a warning is a problem too
  for (const e of [...doc.errors, ...doc.warnings]) {
    // linePos is only filled in with prettyErrors; the offset always is
    const at = lineCounter.linePos(e.pos[0])
    problems.push({ path: '', message: `${YAML_SYNTAX[e.code] ?? 'a YAML syntax error'} (column ${at.col})`, line: e.linePos?.[0]?.line ?? at.line })
  }
  if (problems.length > 0) throw new ConfigError(problems, source)

  const raw = resolvePlaceholders(toJS(doc, lineCounter, source) ?? {}, env, problems) as Record<string, unknown>
  const ctx = { baseDir: options.baseDir ?? process.cwd(), source, hash: createHash('sha256').update(text).digest('hex'), cores: options.cores }
  if (!validate(raw)) {
    const schemaProblems = ajvProblems(validate.errors ?? [])
    problems.push(...schemaProblems)
    // add the semantic problems of the parts the schema did not already fault
    const related = (a: string, b: string): boolean => a === b || a.startsWith(b + '/') || b.startsWith(a + '/')
    const semantic: ConfigProblem[] = []
    normalize(raw, ctx, semantic)
    for (const p of semantic) {
      if (!schemaProblems.some(s => related(s.path, p.path))) problems.push(p)
    }
  } else if (problems.length === 0) {
    const config = normalize(raw, ctx, problems)
    if (config !== undefined && problems.length === 0) return deepFreeze(config)
  }
  throw new ConfigError(dedupe(problems).map(p => ({ ...p, line: p.line ?? lineOf(doc, lineCounter, p.path) })), source)
}

/**
 * The document as plain data. yaml reports an alias without its anchor only here, as a plain
 * error quoting the alias's name — and an unquoted secret that starts with `*` is read as an
 * alias, so that message would carry the secret into the log, the reload answer and `check`
 * (fix-config-error-quotes-secret). The problem names the line, never the text.
 */
function toJS (doc: Document, lineCounter: LineCounter, source: string): unknown {
  try {
    return doc.toJS()
  } catch {
    let line: number | undefined
    visit(doc, {
      Alias (_key, node) {
        if (line === undefined && node.range !== undefined && node.range !== null) line = lineCounter.linePos(node.range[0]).line
      },
    })
    throw new ConfigError([{
      path: '',
      message: 'a value starting with `*` is a YAML alias whose anchor is missing (or aliases expand too far); quote the value',
      ...(line === undefined ? {} : { line }),
    }], source)
  }
}

/** The errors of anyOf branches are noise: one message per anyOf, from its schema's description. */
function ajvProblems (errors: ErrorObject[]): ConfigProblem[] {
  const anyOfPaths = errors.filter(e => e.keyword === 'anyOf').map(e => e.instancePath)
  return errors
    .filter(e => e.keyword === 'anyOf' || !anyOfPaths.some(p => e.instancePath === p || e.instancePath.startsWith(p + '/')))
    .map(ajvProblem)
}

function ajvProblem (e: ErrorObject): ConfigProblem {
  const path = e.instancePath
  switch (e.keyword) {
    case 'additionalProperties':
      return { path: `${path}/${String(e.params.additionalProperty)}`, message: 'unknown setting' }
    case 'required':
      return { path: `${path}/${String(e.params.missingProperty)}`, message: 'is required' }
    case 'enum':
      return { path, message: `must be one of ${(e.params.allowedValues as unknown[]).map(v => JSON.stringify(v)).join(', ')}` }
    case 'pattern':
      return { path, message: 'has an invalid format' }
    case 'maxDuration':
      return { path, message: `must be a duration of at most ${String((e.parentSchema as { maxDuration?: string } | undefined)?.maxDuration)}` }
    case 'anyOf': {
      const description = (e.parentSchema as { description?: string } | undefined)?.description
      return { path, message: description === undefined ? 'is not a valid value' : `must be ${description}` }
    }
    default:
      return { path, message: e.message ?? 'is invalid' }
  }
}

/** anyOf produces one error per branch plus its own; keep one message per path, the most specific. */
function dedupe (problems: ConfigProblem[]): ConfigProblem[] {
  const seen = new Set<string>()
  const out: ConfigProblem[] = []
  for (const p of problems) {
    const key = `${p.path}\u0000${p.message}`
    if (!seen.has(key)) { seen.add(key); out.push(p) }
  }
  return out
}

function lineOf (doc: Document, counter: LineCounter, path: string): number | undefined {
  const segments = path.split('/').slice(1).map(s => /^[0-9]+$/.test(s) ? Number(s) : s)
  // walk up until a node exists (an unknown or missing key points at its parent)
  for (let n = segments.length; n >= 1; n--) {
    const node = doc.getIn(segments.slice(0, n), true)
    if (isNode(node) && node.range !== undefined && node.range !== null) return counter.linePos(node.range[0]).line
  }
  return undefined
}

/**
 * Freezes a configuration and everything in it, as the loader hands it out. Also for the
 * copies a worker receives from the primary (structured clones are not frozen): nothing may
 * change a configuration once it is in use.
 */
export function deepFreeze<T> (value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const v of Object.values(value)) deepFreeze(v)
  }
  return value
}
