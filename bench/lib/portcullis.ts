/**
 * portcullis under test: its gateway.yaml and how to start it.
 * Prefers compiled JS (what production runs) and falls back to tsx on the sources when
 * the build fails.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { stringify } from 'yaml'
import { AUDIENCE, ISSUER, KID, SCOPE, type KeyMaterial } from './tokens.js'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const API_PATH = '/api/orders'

export interface GatewayYamlOptions {
  file: string
  port: number
  adminPort: number
  upstream: string
  keys: KeyMaterial
  /** postgres://… or '' for the embedded store */
  databaseUrl: string
  dataDir: string
  /** extra routes /r0 … /r(N-1), all to the same upstream, before the /api route */
  extraRoutes?: number
  /** the per-request decision log line (default on, as users run it) */
  decisions?: boolean
  /** trust this identity provider too (issuers:, keys by discovery → JWKS) */
  externalIssuer?: { issuer: string, audience: string } | undefined
  /** send a signed assertion on the measured route (identity.assertion + route assertion) */
  assertion?: boolean
}

/** what the assertion configurations send, and the runner's check expects */
export const ASSERTION_HEADER = 'x-portcullis-assertion'
export const ASSERTION_AUDIENCE = 'https://orders.bench.internal'

export function writeGatewayYaml (o: GatewayYamlOptions): string {
  const key = o.keys.secret !== undefined ? { kid: KID, secret: o.keys.secret } : { kid: KID, privateKeyFile: o.keys.privateKeyFile }
  const route = (name: string, prefix: string): Record<string, unknown> => ({
    name, prefix, upstream: o.upstream, auth: 'required', scopes: { '*': [SCOPE] },
  })
  const routes: Array<Record<string, unknown>> = []
  for (let i = 0; i < (o.extraRoutes ?? 0); i++) routes.push(route(`r${i}`, `/r${i}`))
  routes.push({ ...route('orders', '/api'), ...(o.assertion === true ? { assertion: { audience: ASSERTION_AUDIENCE } } : {}) })
  const doc = {
    server: { host: '127.0.0.1', port: o.port },
    admin: { host: '127.0.0.1', port: o.adminPort, token: '' },
    database: { url: o.databaseUrl, dataDir: o.dataDir },
    tokens: {
      issuer: ISSUER,
      audience: AUDIENCE,
      algorithm: o.keys.alg,
      keys: [key],
      accessTokenTtl: '10m',
      refresh: { transport: 'body' },
    },
    identity: {
      headers: { sub: 'x-user-id', scope: 'x-user-scopes' },
      ...(o.assertion === true ? { assertion: { header: ASSERTION_HEADER, lifetime: '5m' } } : {}),
    },
    ...(o.externalIssuer !== undefined
      ? { issuers: [{ name: 'idp', issuer: o.externalIssuer.issuer, discovery: true, audiences: [o.externalIssuer.audience], algorithms: ['RS256'] }] }
      : {}),
    // every benchmark login comes from 127.0.0.1: the per-address limits would answer 429
    login: { throttle: { perIp: 1_000_000, perIpTotal: 1_000_000 } },
    logging: { level: 'info', decisions: o.decisions ?? true },
    routes,
  }
  writeFileSync(o.file, stringify(doc))
  return o.file
}

export interface GatewayCommand {
  cmd: string
  args: (configFile: string) => string[]
  /** 'dist' (compiled) or 'tsx' (sources) */
  mode: 'dist' | 'tsx'
  note: string
}

/**
 * How to start the gateway; undefined when its CLI does not exist yet.
 * The build goes to bench/results/build (git-ignored, inside the repo so that node_modules
 * resolve), not to dist/: other work on this machine may clean dist/ in the middle of a run.
 */
export function gatewayCommand (opts: { build: boolean, entry?: string | undefined }): GatewayCommand | undefined {
  const entry = opts.entry
  if (entry !== undefined) return { cmd: process.execPath, args: (c) => ['--import', 'tsx', entry, 'start', '-c', c], mode: 'tsx', note: `${entry} through tsx (--gateway-entry)` }
  if (!existsSync(join(ROOT, 'src/cli.ts'))) return undefined
  const outDir = join(ROOT, 'bench/results/build')
  const built = join(outDir, 'src/cli.js')
  let note = ''
  if (opts.build) {
    rmSync(outDir, { recursive: true, force: true })
    const tsc = join(ROOT, 'node_modules/.bin/tsc')
    const r = spawnSync(tsc, ['-p', join(ROOT, 'tsconfig.build.json'), '--outDir', outDir, '--sourceMap', 'false'], { cwd: ROOT, encoding: 'utf8' })
    if (r.status !== 0) note = `the build (tsc -p tsconfig.build.json) failed, running the sources with tsx: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 3).join(' | ')}`
  }
  if (existsSync(built) && note === '') {
    return { cmd: process.execPath, args: (c) => [built, 'start', '-c', c], mode: 'dist', note: `compiled JS (tsc -p tsconfig.build.json${opts.build ? '' : ', previous build'})` }
  }
  return {
    cmd: process.execPath,
    args: (c) => ['--import', 'tsx', join(ROOT, 'src/cli.ts'), 'start', '-c', c],
    mode: 'tsx',
    note: note || 'sources through tsx (no build)',
  }
}
