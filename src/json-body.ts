/**
 * The JSON request bodies the gateway reads itself (the auth endpoints, the admin API): read as
 * Fastify reads them (secure-json-parse; `__proto__` and `constructor.prototype` refused), and
 * an object that names a member twice is refused with 400 `duplicate_json_member`.
 *
 * JSON.parse keeps the last of two members of one name. A filter in front of the gateway that
 * keeps the first — a WAF, an audit log, another parser — would judge another request than the
 * one the gateway runs: `{"username": "alice", "username": "admin"}` (RFC 8259 §4 leaves the
 * meaning of duplicate names to each parser, RFC 7493 §2.3 forbids them). Momoa's syntax tree
 * names every member as written, escapes decoded (`"\u0061"` is `a`); it runs only on a body the
 * JSON parser has accepted. Proxied bodies are never read (plugins/proxy.ts).
 */
import type { AnyNode } from '@humanwhocodes/momoa'
import { parse } from '@humanwhocodes/momoa'
import type { FastifyInstance } from 'fastify'
import { ErrorCode, badRequest } from './errors.js'

/** replaces the scope's application/json parser with one that also refuses duplicate member names */
export function readJsonBodiesStrictly (scope: FastifyInstance): void {
  const parseJson = scope.getDefaultJsonParser('error', 'error')
  scope.removeContentTypeParser('application/json')
  scope.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body: string, done) => {
    parseJson(request, body, (err, value) => {
      if (err !== null) {
        done(err, undefined)
        return
      }
      const tooBig = shapeProblem(value)
      if (tooBig !== undefined) {
        done(badRequest(ErrorCode.badRequest, tooBig), undefined)
        return
      }
      let name: string | undefined
      try {
        // secure-json-parse drops a leading byte order mark; momoa refuses one, and a body the
        // JSON parser took was refused as "nested too deeply" (fix-json-bom-refused)
        name = duplicateMemberName(body.charCodeAt(0) === 0xFEFF ? body.slice(1) : body)
      } catch (err) {
        // momoa's parser is recursive: a body nested a few thousand deep, which JSON.parse
        // takes, overflows its stack. No body the gateway reads nests past two levels. Any
        // other disagreement between the two parsers is refused too, and said as such.
        done(badRequest(ErrorCode.badRequest, err instanceof RangeError ? 'the body is nested too deeply' : 'the body is not JSON the gateway can read'), undefined)
        return
      }
      if (name === undefined) done(null, value)
      else done(badRequest(ErrorCode.duplicateJsonMember, `the body names ${JSON.stringify(name.slice(0, 64))} twice in one object`), undefined)
    })
  })
}

/**
 * The most values (objects, arrays, members, elements) a body the gateway reads may hold, and
 * how deep. Its bodies are a few members (a login, a refresh, an admin request); momoa's syntax
 * tree of a 64 KB body of 32,000 values cost 33 ms, before the login throttle counted anything,
 * and every endpoint paid it (30 requests/s held a core: fix-json-body-cpu). Counted on what
 * JSON.parse built, stopping at the limit, so the check costs what a real body costs.
 */
const MAX_BODY_VALUES = 1_000
const MAX_BODY_DEPTH = 16

function shapeProblem (value: unknown): string | undefined {
  let count = 0
  const pending: Array<[unknown, number]> = [[value, 0]]
  for (let item = pending.pop(); item !== undefined; item = pending.pop()) {
    const [v, depth] = item
    if (++count > MAX_BODY_VALUES) return `the body holds more than ${MAX_BODY_VALUES} values`
    if (typeof v !== 'object' || v === null) continue
    if (depth >= MAX_BODY_DEPTH) return 'the body is nested too deeply'
    const children: unknown[] = Array.isArray(v) ? v : Object.values(v)
    if (count + pending.length + children.length > MAX_BODY_VALUES) return `the body holds more than ${MAX_BODY_VALUES} values`
    for (const child of children) pending.push([child, depth + 1])
  }
  return undefined
}

/** the first name an object of `text` (valid JSON) holds twice, at any depth; throws RangeError when nested too deeply */
export function duplicateMemberName (text: string): string | undefined {
  const pending: AnyNode[] = [parse(text, { mode: 'json', ranges: false, tokens: false }).body]
  for (let node = pending.pop(); node !== undefined; node = pending.pop()) {
    if (node.type === 'Object') {
      const names = new Set<string>()
      for (const member of node.members) {
        const name = member.name.type === 'String' ? member.name.value : member.name.name
        if (names.has(name)) return name
        names.add(name)
        pending.push(member.value)
      }
    } else if (node.type === 'Array') {
      for (const element of node.elements) pending.push(element.value)
    }
  }
  return undefined
}
