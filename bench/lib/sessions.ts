/**
 * Session endpoints against a real PostgreSQL: login/s (bound by argon2id: every login
 * verifies one password hash, ~10–20 ms of one core) and refresh/s (a rotation: one
 * transaction that spends the old refresh token and stores the new one, plus signing a
 * new access token). Skips with a message while POST /auth/login does not exist.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { hash, verify } from '@node-rs/argon2'
import type { Ctx } from './configs.js'
import type { Flags } from './flags.js'
import { writeGatewayYaml } from './portcullis.js'
import { cpuUs, freePort, memKiB, start, stop, waitUntil, type Started } from './proc.js'
import { fmt } from './report.js'
import { median } from './stats.js'
import { errorCount, rps, runWrk, SESSIONS_SCRIPT } from './wrk.js'

/** the product's parameters (src/sessions/passwords.ts): argon2id, m=19456 KiB, t=2, p=1 */
const ARGON2 = { algorithm: 2, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const
const USERS = 64
const PASSWORD = 'correct horse battery staple'
const SESSIONS = 200

export interface EndpointResult {
  endpoint: string
  connections: number
  rps: number
  p50Ms: number
  p99Ms: number
  cpuUsPerReq: number
  peakRssMiB: number
  errors: number
  note: string
}

export interface SessionsResult {
  skipped?: string
  argon2VerifyMs?: number
  argon2BoundPerSec?: number
  endpoints: EndpointResult[]
  errors: string[]
}

async function post (url: string, body: unknown): Promise<{ status: number, json: Record<string, unknown> }> {
  const r = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) })
  const text = await r.text()
  let json: Record<string, unknown> = {}
  try { json = JSON.parse(text) as Record<string, unknown> } catch {}
  return { status: r.status, json }
}

export async function runSessions (ctx: Ctx, flags: Flags, log: (s: string) => void): Promise<SessionsResult> {
  const out: SessionsResult = { endpoints: [], errors: [] }
  if (ctx.pg === undefined || ctx.gateway === undefined) { out.skipped = 'needs PostgreSQL and the gateway'; return out }
  const pg = ctx.pg
  const db = 'bench_sessions'
  pg.createDb(db)
  const dir = join(ctx.dir, 'sessions')
  mkdirSync(dir, { recursive: true })
  const port = await freePort()
  const adminPort = await freePort()
  const file = writeGatewayYaml({ file: join(dir, 'gateway.yaml'), port, adminPort, upstream: 'http://127.0.0.1:9', keys: ctx.keys.EdDSA, databaseUrl: pg.url(db), dataDir: join(dir, 'data') })
  const base = `http://127.0.0.1:${port}`
  let gw: Started | undefined
  const launch = async (): Promise<Started> => {
    const g = ctx.gateway
    if (g === undefined) throw new Error('no gateway')
    const p = start({ name: 'portcullis', core: ctx.sutCore, cmd: g.cmd, args: g.args(file), env: { ...process.env, NODE_ENV: 'production' }, logFile: join(dir, `gateway-${Date.now()}.log`) })
    await waitUntil(p, async () => (await fetch(`http://127.0.0.1:${adminPort}/readyz`, { signal: AbortSignal.timeout(1000) })).status === 200, 60_000)
    return p
  }
  try {
    gw = await launch()
    const probe = await post(`${base}/auth/login`, { username: 'nobody', password: 'nothing' })
    if (probe.status === 404) { out.skipped = 'POST /auth/login is not available yet (404): login/refresh not measured'; return out }

    // users: argon2id hashes made here with the product's parameters, written straight to the table
    const t0 = performance.now()
    const pwHash = await hash(PASSWORD, ARGON2)
    const verifyMs: number[] = []
    for (let i = 0; i < 10; i++) { const v0 = performance.now(); await verify(pwHash, PASSWORD); verifyMs.push(performance.now() - v0) }
    out.argon2VerifyMs = median(verifyMs)
    out.argon2BoundPerSec = 1000 / out.argon2VerifyMs
    const now = new Date().toISOString()
    const values = Array.from({ length: USERS }, (_, i) => `('bench-user-${i}', 'bench${i}', '${pwHash}', ARRAY['orders:read'], '{}'::jsonb, false, '${now}', '${now}')`).join(',\n')
    pg.psql(db, `INSERT INTO users (id, name, password_hash, scopes, claims, disabled, created_at, updated_at) VALUES ${values}`)
    log(`  ${USERS} users created in ${fmt(performance.now() - t0)} ms; argon2id verify ${fmt(out.argon2VerifyMs, 1)} ms here (runner, unpinned)`)

    const first = await post(`${base}/auth/login`, { username: 'bench0', password: PASSWORD })
    if (first.status !== 200) { out.errors.push(`login as bench0: ${first.status} ${JSON.stringify(first.json).slice(0, 200)}`); return out }

    // login/s — fresh process, warm-up, measure
    const usersFile = join(dir, 'users.txt')
    writeFileSync(usersFile, Array.from({ length: USERS }, (_, i) => `bench${i} ${PASSWORD}`).join('\n') + '\n')
    const loginConns = 8
    out.endpoints.push(await measureEndpoint(gw, ctx, flags, 'POST /auth/login', loginConns, ['login', usersFile, '/auth/login'], base,
      'argon2id-bound: each login verifies one hash on the gateway core'))

    // refresh/s — a pool of sessions, each refresh token spent exactly once
    const tokens: string[] = []
    for (let i = 0; i < SESSIONS; i++) {
      const r = await post(`${base}/auth/login`, { username: `bench${i % USERS}`, password: PASSWORD })
      const rt = r.json.refresh_token
      if (r.status !== 200 || typeof rt !== 'string') {
        out.errors.push(`login for the refresh pool: ${r.status} ${JSON.stringify(r.json).slice(0, 200)} (is refresh.transport: body honoured?)`)
        return out
      }
      tokens.push(rt)
    }
    const rtFile = join(dir, 'refresh.txt')
    writeFileSync(rtFile, tokens.join('\n') + '\n')
    out.endpoints.push(await measureEndpoint(gw, ctx, flags, 'POST /auth/refresh', 32, ['refresh', rtFile, '/auth/refresh'], base,
      'rotation: one PostgreSQL transaction + one EdDSA signature per request'))
  } catch (err) {
    out.errors.push(err instanceof Error ? err.message.split('\n').slice(0, 6).join(' | ') : String(err))
  } finally {
    if (gw !== undefined) await stop(gw, 10_000)
  }
  return out
}

async function measureEndpoint (gw: Started, ctx: Ctx, flags: Flags, endpoint: string, connections: number, args: string[], base: string, note: string): Promise<EndpointResult> {
  const opts = { url: base, core: ctx.loadCore, connections, path: args[2] ?? '/', timeoutSec: 10 }
  // refresh: the warm-up hands its unspent tokens (successors included) to the measured run
  const isRefresh = args[0] === 'refresh'
  const warmArgs = isRefresh ? [...args.slice(0, 3), `${args[1] ?? ''}.after-warmup`] : args
  const warm = await runWrk({ ...opts, durationSec: Math.min(2, flags.warmupSec), script: { file: SESSIONS_SCRIPT, args: warmArgs } })
  const measuredArgs = isRefresh ? [args[0] ?? 'refresh', `${args[1] ?? ''}.after-warmup`, args[2] ?? '/'] : args
  const c0 = cpuUs(gw.pid)
  const w = await runWrk({ ...opts, durationSec: flags.durationSec, script: { file: SESSIONS_SCRIPT, args: measuredArgs } })
  const c1 = cpuUs(gw.pid)
  return {
    endpoint,
    connections,
    rps: rps(w),
    p50Ms: w.p50Us / 1000,
    p99Ms: w.p99Us / 1000,
    cpuUsPerReq: (c1 - c0) / w.requests,
    peakRssMiB: memKiB(gw.pid).hwm / 1024,
    // `wrapped` counts requests sent with no token left (refresh): errors too
    errors: errorCount(w) + w.wrapped + warm.statusErrors + warm.wrapped,
    note,
  }
}

export function sessionsTable (s: SessionsResult): string {
  if (s.skipped !== undefined) return `Skipped: ${s.skipped}.`
  const lines = [
    '| endpoint | req/s | p50 ms | p99 ms | CPU µs/req | errors | connections | note |',
    '|---|---:|---:|---:|---:|---:|---:|---|',
  ]
  for (const e of s.endpoints) lines.push(`| ${e.endpoint} | ${fmt(e.rps)} | ${fmt(e.p50Ms, 1)} | ${fmt(e.p99Ms, 1)} | ${fmt(e.cpuUsPerReq)} | ${e.errors} | ${e.connections} | ${e.note} |`)
  if (s.argon2VerifyMs !== undefined) lines.push('', `argon2id (m=19456 KiB, t=2, p=1) verify: ${fmt(s.argon2VerifyMs, 1)} ms on this machine → at most ~${fmt(s.argon2BoundPerSec ?? NaN)} logins/s per core. Login throughput is bound by it, by design.`)
  if (s.errors.length > 0) lines.push('', ...s.errors.map((e) => `- error: ${e}`))
  return lines.join('\n')
}
