import { generateKeyPairSync, type JsonWebKey, type KeyObject } from 'node:crypto'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { Agent } from 'undici'
import { REMOTE_KEY_SET_DEFAULTS, type KeySetLogger, type KeySetTimers, type RemoteKeySetOptions } from '../../../src/tokens/issuers/options.js'
import { RemoteKeySet } from '../../../src/tokens/issuers/remote-key-set.js'

/** Hand-driven time: `advance()` moves the clock and fires due timers in order. */
export class FakeTime {
  now = 1_800_000_000_000
  #seq = 0
  #pending = new Map<number, { at: number, fn: () => void }>()

  readonly clock = (): number => this.now
  readonly timers: KeySetTimers = {
    setTimeout: (fn, delayMs) => {
      const id = ++this.#seq
      this.#pending.set(id, { at: this.now + delayMs, fn })
      return id
    },
    clearTimeout: (id) => { this.#pending.delete(id as number) },
  }

  /** the instant the earliest timer fires, if any */
  get nextAt (): number | undefined {
    let at: number | undefined
    for (const t of this.#pending.values()) at = Math.min(at ?? Infinity, t.at)
    return at
  }

  advance (ms: number): void {
    const target = this.now + ms
    for (;;) {
      let next: [number, { at: number, fn: () => void }] | undefined
      for (const entry of this.#pending) if (entry[1].at <= target && (next === undefined || entry[1].at < next[1].at)) next = entry
      if (next === undefined) break
      this.#pending.delete(next[0])
      this.now = Math.max(this.now, next[1].at)
      next[1].fn()
    }
    this.now = target
  }
}

export interface LogLine { level: string, obj: Record<string, unknown>, msg: string }

export function recordingLogger (): KeySetLogger & { lines: LogLine[] } {
  const lines: LogLine[] = []
  const at = (level: string) => (obj: object, msg: string) => { lines.push({ level, obj: obj as Record<string, unknown>, msg }) }
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }
}

export type Handler = (req: IncomingMessage, res: ServerResponse) => void

/**
 * A real JWKS (and discovery) server on 127.0.0.1:0 whose answers the test controls:
 * by default `/jwks` serves `jwks` with `jwksHeaders`, and the discovery path serves
 * `discovery` when set; `handler` replaces all of that. Counts requests by path.
 */
export interface JwksServer {
  origin: string
  jwksUrl: string
  jwks: { keys: unknown[] }
  jwksHeaders: Record<string, string>
  discovery: Record<string, unknown> | undefined
  handler: Handler | undefined
  hits: (path: string) => number
  resetHits: () => void
  close: () => Promise<void>
}

export async function startJwksServer (): Promise<JwksServer> {
  const counts = new Map<string, number>()
  const sockets = new Set<Socket>()
  const state: JwksServer = {
    origin: '',
    jwksUrl: '',
    jwks: { keys: [] },
    jwksHeaders: {},
    discovery: undefined,
    handler: undefined,
    hits: (path) => counts.get(path) ?? 0,
    resetHits: () => { counts.clear() },
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? ''
    counts.set(path, (counts.get(path) ?? 0) + 1)
    // a client that gives up mid-body makes writes fail: expected in these tests
    res.on('error', () => {})
    if (state.handler !== undefined) { state.handler(req, res); return }
    if (path === '/jwks') {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json', ...state.jwksHeaders })
      res.end(JSON.stringify(state.jwks))
      return
    }
    if (path === '/.well-known/openid-configuration' && state.discovery !== undefined) {
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(JSON.stringify(state.discovery))
      return
    }
    res.writeHead(404).end()
  })
  server.on('connection', (s) => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  state.origin = `http://127.0.0.1:${port}`
  state.jwksUrl = `${state.origin}/jwks`
  return state
}

export type KeyKind = 'RSA' | 'RSA1024' | 'P-256' | 'P-384' | 'P-521' | 'Ed25519' | 'Ed448'

export interface TestKeyPair { privateKey: KeyObject, publicKey: KeyObject }

export function keyPair (kind: KeyKind): TestKeyPair {
  switch (kind) {
    case 'RSA': return generateKeyPairSync('rsa', { modulusLength: 2048 })
    case 'RSA1024': return generateKeyPairSync('rsa', { modulusLength: 1024 })
    case 'P-256': return generateKeyPairSync('ec', { namedCurve: 'P-256' })
    case 'P-384': return generateKeyPairSync('ec', { namedCurve: 'P-384' })
    case 'P-521': return generateKeyPairSync('ec', { namedCurve: 'P-521' })
    case 'Ed25519': return generateKeyPairSync('ed25519')
    case 'Ed448': return generateKeyPairSync('ed448')
  }
}

/** The public JWK of a pair, with extra members (kid, alg, use…) */
export function publicJwk (pair: TestKeyPair, extra: Record<string, unknown> = {}): JsonWebKey {
  return { ...pair.publicKey.export({ format: 'jwk' }), ...extra }
}

/** Options with the recommended defaults, loopback http allowed, for a server's /jwks. */
export function options (overrides: Partial<RemoteKeySetOptions> & Pick<RemoteKeySetOptions, 'issuer'>): RemoteKeySetOptions {
  return {
    name: 'corp',
    discovery: false,
    algorithms: ['RS256', 'ES256', 'EdDSA'],
    ...REMOTE_KEY_SET_DEFAULTS,
    allowInsecureHttp: true,
    ...overrides,
  }
}

/** A key set with its own undici Agent, closed (with the set) at teardown. */
export function makeSet (t: { teardown: (fn: () => unknown) => void }, opts: RemoteKeySetOptions): RemoteKeySet {
  const dispatcher = opts.dispatcher ?? new Agent({ keepAliveTimeout: 1_000 })
  const set = new RemoteKeySet({ ...opts, dispatcher })
  t.teardown(async () => {
    set.close()
    if (opts.dispatcher === undefined) await dispatcher.close()
  })
  return set
}

/**
 * Runs fake time forward by `ms`, letting every fetch a timer starts finish before time moves
 * on (the fetches themselves are real HTTP to the test server).
 */
export async function runFor (time: FakeTime, set: RemoteKeySet, ms: number): Promise<void> {
  const target = time.now + ms
  for (;;) {
    const next = time.nextAt
    if (next === undefined || next > target) break
    time.advance(Math.max(0, next - time.now))
    await set.whenSettled()
  }
  time.advance(target - time.now)
  await set.whenSettled()
}
