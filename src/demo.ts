/**
 * `npm run demo`: the quick start on a fresh machine. Creates the example signing key if
 * missing, starts the demo upstream on 127.0.0.1:4001 (it echoes what it receives, so you
 * can see the identity headers; it also serves the demo page and a WebSocket echo, see
 * demo/upstream.ts), creates a first user on an empty store, and runs the gateway with
 * ./gateway.yaml (embedded store in ./data unless DATABASE_URL is set). The demo page:
 * http://127.0.0.1:8080/app/.
 */
import { existsSync } from 'node:fs'
import { generateKey } from './tokens/keys.js'
import { ConfigError } from './errors.js'
import { startDemo } from '../demo/stack.js'

const DEMO_UPSTREAM_PORT = 4001

if (!existsSync('config/keys/k1.pem')) {
  generateKey('EdDSA', 'k1', 'config/keys')
  process.stdout.write('demo: created config/keys/k1.pem\n')
}

try {
  const demo = await startDemo({ configFile: 'gateway.yaml', env: process.env, upstreamPort: DEMO_UPSTREAM_PORT })
  process.stdout.write(`demo: upstream echo server on ${demo.upstream.url}\n`)
  const user = demo.createdUser
  if (user !== undefined) {
    // a first user to log in with; its password is random and shown once
    process.stdout.write(`demo: created user "${user.name}" with password "${user.password}" (scopes ${user.scopes.join(' ')})\n`)
  }
  process.stdout.write(`demo: gateway on ${demo.url} (admin ${demo.adminUrl})\n`)
  process.stdout.write(`demo: the demo app: ${demo.url}/app/\n`)
} catch (err) {
  process.stderr.write((err instanceof ConfigError ? err.message : String(err)) + '\n')
  process.exit(1)
}
