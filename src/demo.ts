/**
 * `npm run demo`: the quick start on a fresh machine. Creates the example signing key if
 * missing, starts a demo upstream on 127.0.0.1:4001 that echoes what it receives (so you
 * can see the identity headers), creates a first user on an empty store, and runs the
 * gateway with ./gateway.yaml (embedded store in ./data unless DATABASE_URL is set).
 */
import { existsSync } from 'node:fs'
import { createServer } from 'node:http'
import { generateKey } from './tokens/keys.js'
import { loadConfigFile } from './config/load.js'
import { ConfigError } from './errors.js'
import { buildGateway } from './app.js'
import { listen } from './server.js'
import { openStore } from './sessions/store.js'
import { usersAdd, usersList } from './sessions/admin-commands.js'
import { randomBytes } from 'node:crypto'

const DEMO_UPSTREAM_PORT = 4001

if (!existsSync('config/keys/k1.pem')) {
  generateKey('EdDSA', 'k1', 'config/keys')
  process.stdout.write('demo: created config/keys/k1.pem\n')
}

const upstream = createServer((req, res) => {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ upstream: 'demo', method: req.method, url: req.url, headers: req.headers }, null, 2) + '\n')
})
upstream.listen(DEMO_UPSTREAM_PORT, '127.0.0.1', () => {
  process.stdout.write(`demo: upstream echo server on http://127.0.0.1:${DEMO_UPSTREAM_PORT}\n`)
})
upstream.unref()

try {
  const config = loadConfigFile('gateway.yaml', { env: process.env })
  const store = await openStore({ url: config.database.url, dataDir: config.database.dataDir, poolSize: config.database.poolSize })
  if ((await usersList(store)).length === 0) {
    // a first user to log in with; its password is random and shown once
    const password = randomBytes(12).toString('base64url')
    await usersAdd(store, { name: 'demo', password, scopes: ['orders:read', 'orders:write'], claims: { roles: ['buyer'] } })
    process.stdout.write(`demo: created user "demo" with password "${password}" (scopes orders:read orders:write)\n`)
  }
  const gateway = await buildGateway(config, { store })
  const l = await listen(gateway)
  process.stdout.write(`demo: gateway on http://${config.server.host}:${l.port} (admin http://${config.admin.host}:${l.adminPort})\n`)
} catch (err) {
  process.stderr.write((err instanceof ConfigError ? err.message : String(err)) + '\n')
  process.exit(1)
}
