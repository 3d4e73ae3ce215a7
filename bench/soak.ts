/**
 * Soak: the gateway as a real process on PostgreSQL for N minutes, under steady proxied
 * load plus logins, refreshes and logouts, watching its memory and every answer.
 *
 *   node --import tsx bench/soak.ts [--minutes 10] [--session-rate 3] [--connections 8]
 *                                   [--sample-sec 10] [--max-rss-growth-pct 20]
 *
 * - proxied load: wrk (one thread, `--connections`, pinned to core 1) in chunks of one
 *   sample each, a pool of valid tokens on GET /api/orders; without wrk, an in-process
 *   undici loop does the same (slower: it shares this process's core);
 * - sessions: `--session-rate` logins, refreshes and logouts per second each, from a
 *   pool of live sessions (login → refreshed now and then → logged out, access token
 *   denylisted), all on the store;
 * - every `--sample-sec`: the gateway's RSS (VmRSS of /proc/PID/status), its CPU share,
 *   the proxied rate, the session operations and errors, and the rows of the session
 *   tables (they must stay flat too).
 * Exit status 1 on any error (a non-2xx where a 2xx is expected, a socket error, the
 * gateway dying) or when RSS grew by more than `--max-rss-growth-pct` from the sample at
 * minute 2 (or at a fifth of a shorter run) to the end.
 *
 * The verify cache is made small (`--verify-cache`, 2,000 entries) so that it is full before
 * minute 2: at the default size (20,000) it keeps filling for ~7 minutes with the soak's
 * fresh tokens, bounded, but indistinguishable from a leak by RSS alone. The live heap
 * after each full GC (--trace-gc) is printed beside RSS for the same reason.
 *
 * Placement (2 cores): the gateway on core 0; wrk, PostgreSQL, the upstream and this
 * process on core 1. The login throttle is raised for the run (every request comes from
 * 127.0.0.1: the default perIpTotal would refuse the soak's own logins).
 */
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import pg from 'pg'
import { Pool } from 'undici'
import { usersAdd } from '../src/sessions/admin-commands.js'
import { openStore } from '../src/sessions/store.js'
import { baseConfig, goodClaims, makeKey, signWith } from '../test/fixtures/gateway.js'
import { startPostgres } from '../test/fixtures/pg.js'
import { startGatewayProcess, type GatewayProcess, type TeardownLike } from '../test/fixtures/process.js'
import { startUpstream } from '../test/fixtures/upstream.js'
import { cpuUs, memKiB, which } from './lib/proc.js'
import { errorCount, runWrk } from './lib/wrk.js'

const PASSWORD = 'soak test password'
const USERS = 20
const TOKENS = 500

class Teardowns implements TeardownLike {
  readonly #fns: Array<() => unknown> = []
  teardown (fn: () => unknown): void { this.#fns.push(fn) }
  async run (): Promise<void> {
    for (const fn of this.#fns.splice(0).reverse()) {
      try { await fn() } catch (err) { process.stderr.write(`teardown: ${String(err)}\n`) }
    }
  }
}

const log = (msg: string): void => { process.stderr.write(`[soak] ${msg}\n`) }
const sleep = (ms: number): Promise<void> => new Promise(resolve => setTimeout(resolve, ms))

interface Counters { ok: number, errors: number, firstErrors: string[] }
const counter = (): Counters => ({ ok: 0, errors: 0, firstErrors: [] })
function fail (c: Counters, what: string): void {
  c.errors++
  if (c.firstErrors.length < 5) c.firstErrors.push(what)
}

interface Res { status: number, json: Record<string, any> }

async function post (pool: Pool, path: string, body: unknown, token?: string): Promise<Res> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (token !== undefined) headers.authorization = `Bearer ${token}`
  const r = await pool.request({ method: 'POST', path, headers, body: JSON.stringify(body), headersTimeout: 10_000, bodyTimeout: 10_000 })
  const text = await r.body.text()
  let json: Record<string, any> = {}
  try { json = JSON.parse(text) as Record<string, any> } catch {}
  return { status: r.statusCode, json }
}

interface Live { access: string, refresh: string }

/** logins, refreshes and logouts at `ratePerSec` each, until stopped */
function sessionLoad (gw: GatewayProcess, ratePerSec: number, state: { stop: boolean }): { done: Promise<void>, login: Counters, refresh: Counters, logout: Counters } {
  const pool = new Pool(gw.url, { connections: 8, pipelining: 1, keepAliveTimeout: 30_000 })
  const c = { login: counter(), refresh: counter(), logout: counter() }
  const live: Live[] = []
  let n = 0
  const guard = async (k: Counters, label: string, op: () => Promise<boolean>): Promise<void> => {
    try {
      if (await op()) k.ok++
    } catch (err) {
      fail(k, `${label}: ${String(err)}`)
    }
  }
  const tick = async (): Promise<void> => {
    const i = n++
    await guard(c.login, 'login', async () => {
      const r = await post(pool, '/auth/login', { username: `user${i % USERS}`, password: PASSWORD })
      if (r.status !== 200) { fail(c.login, `login ${r.status} ${JSON.stringify(r.json)}`); return false }
      live.push({ access: r.json.access_token as string, refresh: r.json.refresh_token as string })
      return true
    })
    const s = live[Math.floor(Math.random() * live.length)]
    if (s !== undefined) {
      await guard(c.refresh, 'refresh', async () => {
        const r = await post(pool, '/auth/refresh', { refresh_token: s.refresh })
        if (r.status !== 200) { fail(c.refresh, `refresh ${r.status} ${JSON.stringify(r.json)}`); return false }
        s.access = r.json.access_token as string
        s.refresh = r.json.refresh_token as string
        return true
      })
    }
    // keep ~50 sessions alive: the oldest one logs out
    const old = live.length > 50 ? live.shift() : undefined
    if (old !== undefined) {
      await guard(c.logout, 'logout', async () => {
        const r = await post(pool, '/auth/logout', { refresh_token: old.refresh }, old.access)
        if (r.status !== 204) { fail(c.logout, `logout ${r.status} ${JSON.stringify(r.json)}`); return false }
        return true
      })
    }
  }
  const done = (async () => {
    const periodMs = 1000 / ratePerSec
    let next = performance.now()
    const inFlight = new Set<Promise<void>>()
    while (!state.stop) {
      const p = tick().finally(() => inFlight.delete(p))
      inFlight.add(p)
      next += periodMs
      await sleep(Math.max(0, next - performance.now()))
    }
    await Promise.all(inFlight)
    await pool.close()
  })()
  return { done, ...c }
}

/** proxied load for `ms` without wrk: `connections` loops on keep-alive connections */
async function undiciChunk (gw: GatewayProcess, tokens: string[], connections: number, ms: number): Promise<{ requests: number, errors: number, first?: string }> {
  const pool = new Pool(gw.url, { connections, pipelining: 1, keepAliveTimeout: 30_000 })
  const end = performance.now() + ms
  let requests = 0
  let errors = 0
  let first: string | undefined
  await Promise.all(Array.from({ length: connections }, async (_, w) => {
    for (let i = w; performance.now() < end; i += connections) {
      try {
        const r = await pool.request({ method: 'GET', path: '/api/orders', headers: { authorization: `Bearer ${tokens[i % tokens.length]!}` } })
        await r.body.dump()
        if (r.statusCode === 200) requests++
        else { errors++; first ??= `GET ${r.statusCode}` }
      } catch (err) {
        errors++
        first ??= String(err)
      }
    }
  }))
  await pool.close()
  return first === undefined ? { requests, errors } : { requests, errors, first }
}

interface Sample {
  atSec: number
  rssMiB: number
  /** the live heap after the last full GC (--trace-gc): what a leak would grow */
  heapAfterGcMiB: number | undefined
  proxied: number
  cpuPct: number
  proxiedRps: number
  proxiedErrors: number
  logins: number
  refreshes: number
  logouts: number
  sessionErrors: number
  rows: { sessions: number, refreshTokens: number, revocations: number, loginAttempts: number }
}

async function main (): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '10' },
      'session-rate': { type: 'string', default: '3' },
      connections: { type: 'string', default: '8' },
      'sample-sec': { type: 'string', default: '10' },
      'max-rss-growth-pct': { type: 'string', default: '20' },
      'verify-cache': { type: 'string', default: '2000' },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  if (values.help) {
    process.stdout.write('usage: node --import tsx bench/soak.ts [--minutes 10] [--session-rate 3] [--connections 8] [--sample-sec 10] [--max-rss-growth-pct 20] [--verify-cache 2000]\n')
    return
  }
  const durationMs = Number(values.minutes) * 60_000
  const sampleMs = Number(values['sample-sec']) * 1000
  const sessionRate = Number(values['session-rate'])
  const connections = Number(values.connections)
  const maxGrowthPct = Number(values['max-rss-growth-pct'])
  const useWrk = which('wrk') !== undefined
  const td = new Teardowns()
  const onSignal = (): void => { td.run().finally(() => process.exit(130)) }
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const problems: string[] = []
  const samples: Sample[] = []
  const loadStart = loadavg().map(l => l.toFixed(1)).join(' ')
  try {
    execFileSync('taskset', ['-a', '-cp', '1', String(process.pid)], { stdio: 'ignore' })
    log('starting PostgreSQL')
    const cluster = await startPostgres(td)
    const url = await cluster.createDatabase('soak')
    const store = await openStore({ url })
    for (let i = 0; i < USERS; i++) await usersAdd(store, { name: `user${i}`, password: PASSWORD, scopes: ['orders:read'] })
    await store.close()
    const db = new pg.Client({ connectionString: url })
    await db.connect()
    td.teardown(() => db.end())

    // the upstream records requests; a soak must not: the list is emptied at every sample
    const upstream = await startUpstream()
    td.teardown(() => upstream.close())
    const key = makeKey('EdDSA')
    const config = baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: upstream.url, rewritePrefix: '/orders', auth: 'required', scopes: { GET: ['orders:read'], '*': ['orders:write'] } }], {
      // The verified-token cache is bounded (tokens.verifyCacheSize, 20,000 by default) and
      // fills with the fresh tokens of every chunk: at the default it takes ~7 minutes to
      // fill, and its growth would hide a leak behind it. A smaller one is full within the
      // first minute, so from minute 2 on any growth is something else.
      tokens: { refresh: { transport: 'body' }, verifyCacheSize: Number(values['verify-cache']) },
      logging: { level: 'warn', decisions: true },
    })
    config.database = { url }
    config.login = { throttle: { perIpTotal: 1_000_000, perIp: 1_000_000 } }
    log('starting the gateway on core 0')
    // --trace-gc: every full GC prints the heap it kept, the leak signal that RSS blurs
    const gw = await startGatewayProcess(td, { config, key, wrap: ['taskset', '-c', '0'], nodeArgs: ['--trace-gc'], name: 'soak' })
    let gcScanned = 0
    let heapAfterGcMiB: number | undefined
    const lastFullGc = (): number | undefined => {
      const out = gw.output()
      // e.g. "[123:0x…]   45678 ms: Mark-Compact 48.3 (60.5) -> 40.2 (61.2) MB, …"
      for (const m of out.slice(gcScanned).matchAll(/Mark-Compact(?: \(reduce\))? [\d.]+ \([\d.]+\) -> ([\d.]+) \(/g)) heapAfterGcMiB = Number(m[1])
      gcScanned = out.length
      return heapAfterGcMiB
    }

    // A pool of valid tokens, minted again for every chunk: a token may not live longer
    // than the access-token TTL, and fresh tokens keep the verify cache honest (real
    // clients' tokens are replaced every few minutes too).
    const dir = mkdtempSync(join(tmpdir(), 'portcullis-soak-'))
    td.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const tokenFile = join(dir, 'tokens.txt')
    const mint = (): string[] => {
      const nowSec = Math.floor(Date.now() / 1000)
      const tokens = Array.from({ length: TOKENS }, (_, i) => signWith(key, goodClaims({ sub: `soak${i}`, sid: randomUUID() }, nowSec)))
      writeFileSync(tokenFile, tokens.join('\n') + '\n')
      return tokens
    }

    const state = { stop: false }
    const sessions = sessionLoad(gw, sessionRate, state)
    log(`${values.minutes} min: proxied load with ${useWrk ? `wrk -c${connections}` : `undici (${connections} connections)`}, ` +
      `${sessionRate} logins + refreshes + logouts per second; a sample every ${sampleMs / 1000} s`)
    const t0 = performance.now()
    let prevCpu = cpuUs(gw.pid)
    let prevT = t0
    let prev = { login: 0, refresh: 0, logout: 0 }
    const exit = { gateway: false }
    gw.exited.then(() => { exit.gateway = true }, () => {})
    process.stdout.write('| t (s) | RSS MiB | heap after last full GC MiB | gateway CPU % | proxied req/s | proxied errors | logins | refreshes | logouts | session errors | sessions / refresh_tokens / revocations / login_attempts rows |\n|---|---|---|---|---|---|---|---|---|---|---|\n')
    for (;;) {
      const chunkMs = Math.min(sampleMs, durationMs - (performance.now() - t0))
      if (chunkMs < 1000 || exit.gateway) break
      const tokens = mint()
      let requests: number
      let errors: number
      if (useWrk) {
        const r = await runWrk({ url: gw.url, core: 1, connections, durationSec: Math.max(1, Math.round(chunkMs / 1000)), tokenFile, path: '/api/orders', mode: 'pool' })
        requests = r.requests
        errors = errorCount(r)
        if (errors > 0) problems.push(`wrk chunk at ${Math.round((performance.now() - t0) / 1000)} s: ${JSON.stringify(r)}`)
      } else {
        const r = await undiciChunk(gw, tokens, connections, chunkMs)
        requests = r.requests
        errors = r.errors
        if (errors > 0) problems.push(`proxied chunk: ${errors} errors, first: ${r.first ?? '?'}`)
      }
      upstream.requests.length = 0
      if (exit.gateway) break
      const now = performance.now()
      const cpu = cpuUs(gw.pid)
      const { rows } = await db.query(`SELECT (SELECT count(*) FROM sessions)::int AS s, (SELECT count(*) FROM refresh_tokens)::int AS rt,
        (SELECT count(*) FROM revocations)::int AS rv, (SELECT count(*) FROM login_attempts)::int AS la`)
      const cur = { login: sessions.login.ok, refresh: sessions.refresh.ok, logout: sessions.logout.ok }
      const sample: Sample = {
        atSec: Math.round((now - t0) / 1000),
        rssMiB: memKiB(gw.pid).rss / 1024,
        heapAfterGcMiB: lastFullGc(),
        proxied: requests,
        cpuPct: (cpu - prevCpu) / 1000 / (now - prevT) * 100,
        proxiedRps: requests / (chunkMs / 1000),
        proxiedErrors: errors,
        logins: cur.login - prev.login,
        refreshes: cur.refresh - prev.refresh,
        logouts: cur.logout - prev.logout,
        sessionErrors: sessions.login.errors + sessions.refresh.errors + sessions.logout.errors,
        rows: { sessions: rows[0].s, refreshTokens: rows[0].rt, revocations: rows[0].rv, loginAttempts: rows[0].la },
      }
      samples.push(sample)
      prev = cur
      prevCpu = cpu
      prevT = now
      process.stdout.write(`| ${sample.atSec} | ${sample.rssMiB.toFixed(1)} | ${sample.heapAfterGcMiB?.toFixed(1) ?? '-'} | ${sample.cpuPct.toFixed(0)} | ${sample.proxiedRps.toFixed(0)} | ${sample.proxiedErrors} | ` +
        `${sample.logins} | ${sample.refreshes} | ${sample.logouts} | ${sample.sessionErrors} | ` +
        `${sample.rows.sessions} / ${sample.rows.refreshTokens} / ${sample.rows.revocations} / ${sample.rows.loginAttempts} |\n`)
    }
    state.stop = true
    await sessions.done
    if (exit.gateway) problems.push(`the gateway exited during the run:\n${gw.output().slice(-2000)}`)
    for (const [name, k] of Object.entries({ login: sessions.login, refresh: sessions.refresh, logout: sessions.logout })) {
      if (k.errors > 0) problems.push(`${name}: ${k.errors} errors (of ${k.ok + k.errors}); first: ${k.firstErrors.join(' | ')}`)
    }

    // RSS growth: the sample at minute 2 (a fifth of a shorter run) against the last
    const baseAtSec = Math.min(120, durationMs / 1000 / 5)
    const base = samples.find((s) => s.atSec >= baseAtSec)
    const last = samples.at(-1)
    const growthPct = base === undefined || last === undefined ? NaN : (last.rssMiB - base.rssMiB) / base.rssMiB * 100
    const totals = {
      proxied: samples.reduce((a, s) => a + s.proxied, 0),
      proxiedErrors: samples.reduce((a, s) => a + s.proxiedErrors, 0),
    }
    process.stdout.write(`\nsoak: ${values.minutes} min, Node ${process.version}, load average at start ${loadStart}, at end ${loadavg().map(l => l.toFixed(1)).join(' ')}\n` +
      `proxied: ${Math.round(totals.proxied)} requests, ${totals.proxiedErrors} errors; ` +
      `sessions: ${sessions.login.ok} logins, ${sessions.refresh.ok} refreshes, ${sessions.logout.ok} logouts, ${sessions.login.errors + sessions.refresh.errors + sessions.logout.errors} errors\n` +
      `RSS: ${base?.rssMiB.toFixed(1) ?? '?'} MiB at ${base?.atSec ?? '?'} s → ${last?.rssMiB.toFixed(1) ?? '?'} MiB at ${last?.atSec ?? '?'} s ` +
      `(${Number.isNaN(growthPct) ? '?' : growthPct.toFixed(1)} %; limit ${maxGrowthPct} %), peak ${Math.max(...samples.map(s => s.rssMiB)).toFixed(1)} MiB; ` +
      `heap after full GC: ${base?.heapAfterGcMiB?.toFixed(1) ?? '?'} → ${last?.heapAfterGcMiB?.toFixed(1) ?? '?'} MiB\n`)
    if (Number.isNaN(growthPct)) problems.push('too few samples to judge the RSS')
    else if (growthPct > maxGrowthPct) problems.push(`RSS grew ${growthPct.toFixed(1)} % (limit ${maxGrowthPct} %)`)
    await gw.kill()
  } finally {
    await td.run()
  }
  if (problems.length > 0) {
    process.stdout.write(`\nFAILED:\n- ${problems.join('\n- ')}\n`)
    process.exitCode = 1
  } else {
    process.stdout.write('\nOK: no error, RSS flat\n')
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`soak: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exitCode = 1
})
