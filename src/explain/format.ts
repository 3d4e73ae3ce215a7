import type { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { HTTP_METHODS } from '../config/types.js'
import { readConfigOrReport } from '../check.js'
import { type Explanation, explainRequest, offlineRuntime } from './explain.js'
import { AUTH_ENDPOINTS } from './request.js'

/** `portcullis explain`: the text form and the command. */

export function formatExplanation (ex: Explanation): string {
  const lines: string[] = []
  const field = (label: string, text: string): void => { lines.push(`${label.padEnd(10)}${text}`) }
  const more = (text: string): void => { lines.push(`${''.padEnd(10)}${text}`) }
  field('request', `${ex.request.method} ${ex.request.target}`)
  for (const [n, v] of ex.request.headers) more(`${n}: ${v}`)
  field('edge', ex.edge.passed ? 'passed (path, Host, duplicate headers, Transfer-Encoding)' : `refused ${ex.edge.status} ${ex.edge.reason}: ${ex.edge.message}`)
  if (ex.endpoint !== undefined) field('endpoint', `${ex.endpoint.path}: the gateway's own endpoint (${ex.endpoint.name}), not a route`)
  if (ex.edge.passed && ex.endpoint === undefined) {
    if (ex.route !== undefined) {
      field('route', `${ex.route.name}: prefix ${ex.route.prefix} → ${ex.route.upstream}${ex.route.rewritePrefix}`)
    } else {
      field('route', `none: no route prefix matches ${ex.request.target.split('?')[0] ?? ''}`)
      if (ex.closest !== undefined && ex.closest.length > 0) more(`closest: ${ex.closest.map(c => `${c.prefix} (${c.name})`).join(', ')}`)
      if (/^\/auth(\/|$)/i.test(ex.request.target)) more(`the gateway's own endpoints are ${AUTH_ENDPOINTS.map(e => `/auth/${e}`).join(', ')} (POST)`)
    }
  }
  if (ex.rule !== undefined) {
    const r = ex.rule
    const from = r.scope.from === undefined ? '' : r.scope.from === r.scope.method ? ` (${r.scope.from}'s own rule)` : r.scope.from === '*' ? ' (the "*" rule)' : ` (${r.scope.from}'s rule)`
    const scope = `${r.scope.method} needs ${r.scope.needs}${from}`
    const parts = [`auth ${r.auth}`, `methods ${r.methods === '*' ? 'all' : r.methods.join(', ')}`, scope]
    if (r.auth !== 'public') parts.push(`issuers ${r.issuers.join(', ')}`)
    parts.push(`CORS ${r.cors ? 'on' : 'off'}`)
    if (r.websocket) parts.push('WebSocket upgrades')
    if (r.assertion !== undefined) parts.push(`assertion for ${r.assertion}`)
    field('rule', parts.join('; '))
  }
  if (ex.credentials !== undefined) {
    const c = ex.credentials
    const who = [
      ...(c.issuer === undefined ? [] : [`issuer ${c.issuer}`]),
      // a token that got through without a sub has no subject (no x-user-id)
      ...(c.sub === undefined && c.issuer === undefined ? [] : [`sub ${c.sub === undefined || c.sub === '' ? '(none)' : c.sub}`]),
      ...(c.scopes === undefined ? [] : [`scopes ${c.scopes.join(' ') || '(none)'}`]),
      ...(c.expiresAt === undefined ? [] : [`expires ${c.expiresAt}`]),
    ].join(', ')
    field('token', `${c.check}${who === '' ? '' : `: ${who}`}`)
    more(c.note)
  }
  const d = ex.decision
  if (d.outcome === 'proxied') field('decision', `proxied (${d.reason}: ${d.message ?? ''})`)
  else if (d.outcome === 'answered') field('decision', `answered by the gateway ${d.status ?? ''} (${d.reason}): ${d.message ?? ''}`)
  else if (d.outcome === 'gateway') field('decision', `not proxied: ${d.message ?? ''}`)
  else {
    field('decision', `refused ${d.status ?? ''} ${d.reason}: ${d.message ?? ''}`)
    if (d.scope !== undefined) more(`scopes that would do: ${d.scope}`)
    if (d.allow !== undefined) more(`Allow: ${d.allow}`)
    if (ex.credentials?.check === 'unverified' || ex.credentials?.check === 'claims-given') more('(decided on claims whose signature was not checked)')
  }
  if (ex.upstream !== undefined) {
    field('upstream', `${ex.upstream.method} ${ex.upstream.url}`)
    for (const [n, v] of ex.upstream.headers) more(`${n}: ${v}`)
  }
  if (ex.notes.length > 0) {
    field('notes', `- ${ex.notes[0] as string}`)
    for (const n of ex.notes.slice(1)) more(`- ${n}`)
  }
  return lines.join('\n') + '\n'
}

export const EXPLAIN_USAGE = 'usage: portcullis explain [-c gateway.yaml] METHOD URL [--token T | --token - | --claims JSON] [-H "name: value"]… [--peer ADDR] [--json]\n' +
  '       (--token -: the token from standard input, kept out of `ps` and shell history)\n'

// far above any token a gateway accepts (tokens.maxTokenBytes refuses those as the gateway
// does); beyond it stdin is not a token, and is not read into memory whole
const MAX_STDIN_TOKEN_BYTES = 1_048_576

/** `--token -`: the whole of stdin, surrounding whitespace (the newline of `echo`, a CRLF) dropped */
async function readTokenFromStdin (input: Readable): Promise<string | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of input) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk as Buffer
    size += b.length
    if (size > MAX_STDIN_TOKEN_BYTES) return undefined
    chunks.push(b)
  }
  return Buffer.concat(chunks).toString('utf8').trim()
}

/** exit 0: proxied (or a preflight answered); 1: refused or not proxied; 2: usage or configuration */
export async function explainCommand (args: string[], nowMs = Date.now()): Promise<number> {
  const usage = (problem: string): number => { process.stderr.write(`${problem}\n${EXPLAIN_USAGE}`); return 2 }
  let parsed
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c', default: 'gateway.yaml' },
        token: { type: 'string' },
        claims: { type: 'string' },
        header: { type: 'string', short: 'H', multiple: true },
        peer: { type: 'string' },
        json: { type: 'boolean', default: false },
      },
    })
  } catch (err) {
    return usage((err as Error).message)
  }
  const { values, positionals } = parsed
  if (positionals.length !== 2) return usage('explain: METHOD and URL are required')
  const method = (positionals[0] as string).toUpperCase()
  // any method a client can send (an RFC 9110 token); those the gateway never forwards are explained as refused
  if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$/.test(method)) return usage(`explain: METHOD must be an HTTP method such as ${HTTP_METHODS.join(', ')}`)
  if (values.token !== undefined && values.claims !== undefined) return usage('explain: give --token or --claims, not both')
  let token = values.token
  if (token === '-') {
    token = await readTokenFromStdin(process.stdin)
    if (token === undefined) return usage(`explain: --token -: more than ${MAX_STDIN_TOKEN_BYTES} bytes on standard input, not a token`)
    if (token === '') return usage('explain: --token -: no token on standard input')
  }
  const headers: Array<[string, string]> = []
  for (const line of values.header ?? []) {
    const colon = line.indexOf(':')
    if (colon <= 0) return usage(`explain: -H ${JSON.stringify(line)}: expected "name: value"`)
    headers.push([line.slice(0, colon).trim(), line.slice(colon + 1).trim()])
  }
  if ((token !== undefined || values.claims !== undefined) && headers.some(([n]) => n.toLowerCase() === 'authorization')) {
    return usage('explain: --token/--claims set Authorization; do not give it with -H too')
  }
  let claims: Record<string, unknown> | undefined
  if (values.claims !== undefined) {
    try {
      claims = JSON.parse(values.claims) as Record<string, unknown>
    } catch {
      return usage('explain: --claims must be a JSON object')
    }
    if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) return usage('explain: --claims must be a JSON object')
  }
  const config = readConfigOrReport(values.config)
  if (config === undefined) return 2
  const { runtime, close } = offlineRuntime(config, () => nowMs)
  try {
    const ex = await explainRequest(runtime, { method, url: positionals[1] as string, headers, token, claims, peerAddress: values.peer }, nowMs)
    // --json: absent parts as null, so every key is always there for a script
    process.stdout.write(values.json ? JSON.stringify(ex, (_key, value: unknown) => value === undefined ? null : value, 2) + '\n' : formatExplanation(ex))
    return ex.decision.outcome === 'proxied' || ex.decision.outcome === 'answered' ? 0 : 1
  } finally {
    await close()
  }
}
