/**
 * The whole demo in one process: the demo upstream (page, SDK, echo, WebSocket echo) and
 * the gateway running gateway.yaml. `npm run demo` (src/demo.ts) starts it on the file's
 * ports; the browser suite and scripts/screenshot-demo.ts start it on free ports with an
 * in-memory store.
 */
import { copyFileSync, readFileSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import { buildGateway, type Gateway } from '../src/app.js'
import { loadConfigText } from '../src/config/load.js'
import { listen } from '../src/server.js'
import { usersAdd, usersList } from '../src/sessions/admin-commands.js'
import { openStore, type Store } from '../src/sessions/store.js'
import { generateKey } from '../src/tokens/keys.js'
import { startDemoUpstream, type DemoUpstream } from './upstream.js'

/** where gateway.yaml's routes send their requests */
export const DEMO_UPSTREAM_URL = 'http://127.0.0.1:4001'
export const DEMO_USER = 'demo'

export interface DemoOptions {
  configFile: string
  /** for the file's ${VAR} placeholders */
  env: Readonly<Record<string, string | undefined>>
  /** 4001 for npm run demo; 0 (any free port) points the file's routes at wherever it landed */
  upstreamPort: number
  /** default: the store the file configures (./data, or DATABASE_URL) */
  store?: Store
  /** the first user's password when the store has no user; default: random, returned in `createdUser` */
  password?: string
  logger?: Logger
  handleSignals?: boolean
}

export interface Demo {
  /** the gateway, e.g. http://127.0.0.1:8080 */
  url: string
  adminUrl: string
  gateway: Gateway
  upstream: DemoUpstream
  /** the user created on an empty store, with its password (shown once) */
  createdUser: { name: string, password: string, scopes: string[] } | undefined
  close: () => Promise<void>
}

/**
 * A copy of `configFile` in `dir` with a fresh `config/keys/k1.pem` beside it (the key is
 * not in git; npm run demo makes it on first use): the real gateway.yaml, runnable from a
 * fresh checkout without touching its config/keys. Returns the copy's path.
 */
export function demoSandbox (configFile: string, dir: string): string {
  const copy = join(dir, 'gateway.yaml')
  copyFileSync(configFile, copy)
  generateKey('EdDSA', 'k1', join(dir, 'config', 'keys'))
  return copy
}

export async function startDemo (o: DemoOptions): Promise<Demo> {
  const upstream = await startDemoUpstream({ port: o.upstreamPort })
  try {
    let text = readFileSync(o.configFile, 'utf8')
    if (upstream.url !== DEMO_UPSTREAM_URL) text = text.replaceAll(DEMO_UPSTREAM_URL, upstream.url)
    const config = loadConfigText(text, { env: o.env, baseDir: dirname(resolve(o.configFile)) }, o.configFile)
    const store = o.store ?? await openStore({ url: config.database.url, dataDir: config.database.dataDir, poolSize: config.database.poolSize })
    let createdUser: Demo['createdUser']
    if ((await usersList(store)).length === 0) {
      const password = o.password ?? randomBytes(12).toString('base64url')
      const scopes = ['orders:read', 'orders:write']
      await usersAdd(store, { name: DEMO_USER, password, scopes, claims: { roles: ['buyer'] } })
      createdUser = { name: DEMO_USER, password, scopes }
    }
    const gateway = await buildGateway(config, o.logger === undefined ? { store } : { store, logger: o.logger })
    const l = await listen(gateway, { handleSignals: o.handleSignals ?? true })
    // a wildcard listener is reached on the loopback address
    const host = ['0.0.0.0', '::'].includes(config.server.host) ? '127.0.0.1' : config.server.host
    return {
      url: `${config.server.tls === undefined ? 'http' : 'https'}://${host}:${l.port}`,
      adminUrl: `http://${config.admin.host}:${l.adminPort}`,
      gateway,
      upstream,
      createdUser,
      close: async () => {
        await l.shutdown()
        await upstream.close()
      },
    }
  } catch (err) {
    await upstream.close()
    throw err
  }
}
