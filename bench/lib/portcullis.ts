/**
 * portcullis under test: its gateway.yaml and how to start it.
 * Prefers the compiled build (`dist/src/cli.js`, what production runs) and falls back to
 * tsx on the sources when the build is absent or fails.
 */
import { spawnSync } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
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
}

export function writeGatewayYaml (o: GatewayYamlOptions): string {
  const key = o.keys.secret !== undefined ? { kid: KID, secret: o.keys.secret } : { kid: KID, privateKeyFile: o.keys.privateKeyFile }
  const route = (name: string, prefix: string): Record<string, unknown> => ({
    name, prefix, upstream: o.upstream, auth: 'required', scopes: { GET: [SCOPE], POST: [SCOPE] },
  })
  const routes: Array<Record<string, unknown>> = []
  for (let i = 0; i < (o.extraRoutes ?? 0); i++) routes.push(route(`r${i}`, `/r${i}`))
  routes.push(route('orders', '/api'))
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
    identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes' } },
    logging: { level: 'info', decisions: true },
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

/** undefined when the gateway's CLI does not exist yet */
export function gatewayCommand (opts: { build: boolean, nodeArgs?: string[] }): GatewayCommand | undefined {
  const nodeArgs = opts.nodeArgs ?? []
  if (!existsSync(join(ROOT, 'src/cli.ts'))) return undefined
  let note = ''
  if (opts.build) {
    const r = spawnSync('npm', ['run', '--silent', 'build'], { cwd: ROOT, encoding: 'utf8' })
    if (r.status !== 0) note = `npm run build failed, running the sources with tsx: ${(r.stdout + r.stderr).trim().split('\n').slice(0, 5).join(' | ')}`
  }
  const dist = join(ROOT, 'dist/src/cli.js')
  if (existsSync(dist) && note === '') {
    return { cmd: process.execPath, args: (c) => [...nodeArgs, dist, 'start', '-c', c], mode: 'dist', note: opts.build ? 'compiled (npm run build)' : 'compiled (existing dist/)' }
  }
  return {
    cmd: process.execPath,
    args: (c) => [...nodeArgs, '--import', 'tsx', join(ROOT, 'src/cli.ts'), 'start', '-c', c],
    mode: 'tsx',
    note: note || 'sources through tsx (no dist/)',
  }
}
