#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfigFile } from './config/load.js'
import { ConfigError, formatProblem, GatewayError } from './errors.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig } from './config/types.js'
import { generateKey } from './tokens/keys.js'
import { buildGateway } from './app.js'
import { listen } from './server.js'
import { configFromPrimary, isWorker, runPrimary, serveAsWorker } from './workers.js'
import { createLogger } from './logger.js'
import adminApiPlugin from '../plugins/admin-api.js'
import { SessionService } from './sessions/service.js'
import { pino } from 'pino'
import { openStore, type Store } from './sessions/store.js'
import { readPassword } from './sessions/read-password.js'
import {
  migrate, sessionsList, sessionsRevoke, usersAdd, usersDisable, usersEnable, usersList, usersPasswd, usersSetScopes, usersUpdateClaims,
} from './sessions/admin-commands.js'
import type { AdminOptions } from './sessions/admin-commands.js'
import { SecurityEvents } from './security-events.js'
import { checkCommand } from './check.js'
import { explainCommand } from './explain/format.js'

const USAGE = `portcullis — an API gateway that terminates authentication

usage:
  portcullis start   [-c gateway.yaml]         run the gateway
  portcullis check   [-c gateway.yaml] [--offline]
                                               validate the config; print the route table, the
                                               issuers' key state (one fetch each unless --offline)
                                               and warnings about overlapping routes
  portcullis explain [-c gateway.yaml] METHOD URL [--token T | --claims JSON] [-H "name: value"]…
                     [--peer ADDR] [--json]    what the gateway would do with this request (route,
                                               rule, decision, upstream URL and headers); no network
  portcullis reload  [-c gateway.yaml] [--pid PID]
                                               load the file again in the running gateway (admin API,
                                               or SIGHUP to PID); on any problem the old one stays
  portcullis keys generate --alg EdDSA --kid k1 --out DIR
                                               write a new signing key (PEM) or HS256 secret
  portcullis migrate [-c gateway.yaml]         apply database migrations (start does it too)
  portcullis users add NAME [--scopes "a b"] [--claim k=v]… [--password-stdin]
  portcullis users list | disable NAME | enable NAME | passwd NAME | scopes NAME --scopes "a b" (--scopes "" clears)
  portcullis users claims NAME [--claim k=v]… [--unset KEY]… [--replace]
  portcullis sessions list USER
  portcullis sessions revoke (--user USER | --session SID)
                                               (the password is prompted for, or read from stdin
                                               with --password-stdin; never taken from argv)
options:
  -c, --config FILE   configuration file (default ./gateway.yaml)
  -h, --help          this text
`

type Command = (args: string[]) => Promise<number>

const commands: Record<string, Command> = {
  start: async (args) => {
    const worker = isWorker()
    // a worker runs the configuration its primary read, never the file (src/workers.ts)
    const config = worker ? await configFromPrimary() : readConfig(args)
    if (config === undefined) return 1
    if (config.server.workers > 1 && !worker) {
      await startPrimary(config, (): GatewayConfig => loadConfigFile(config.source, { env: process.env }))
      return -1
    }
    // fail closed: without the store there is no denylist, so the gateway does not start
    const store = await openConfiguredStore(config)
    // a worker's reloads are handed to it by the primary
    const loadConfig = worker ? undefined : (): GatewayConfig => loadConfigFile(config.source, { env: process.env })
    const gateway = await buildGateway(config, { store, loadConfig })
    const l = await listen(gateway, { admin: !worker })
    if (worker) serveAsWorker(gateway, l.port)
    return -1 // keep running
  },
  reload: async (args) => {
    const { values } = parseArgs({ args, allowPositionals: false, options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' }, pid: { type: 'string' } } })
    if (values.pid !== undefined) {
      // a gateway without an admin token: signal it; the outcome is in its log
      process.kill(Number(values.pid), 'SIGHUP')
      process.stdout.write(`sent SIGHUP to ${values.pid}; the gateway logs the outcome\n`)
      return 0
    }
    const config = readConfig(['-c', values.config])
    if (config === undefined) return 1
    if (config.admin.token === '') {
      process.stderr.write('reload goes through the admin API, which needs admin.token; without one use --pid PID (SIGHUP)\n')
      return 2
    }
    const host = config.admin.host === '0.0.0.0' || config.admin.host === '::' ? '127.0.0.1' : config.admin.host
    const res = await fetch(`http://${host.includes(':') ? `[${host}]` : host}:${config.admin.port}/admin/reload`, { method: 'POST', headers: { authorization: `Bearer ${config.admin.token}` } })
    const result = await res.json() as { ok: boolean, hash: string, problems: Array<{ path: string, message: string, line?: number }> }
    if (result.ok) {
      process.stdout.write(`reloaded: configuration ${result.hash.slice(0, 12)} in force\n`)
      return 0
    }
    process.stderr.write(`reload refused; configuration ${result.hash.slice(0, 12)} stays in force:\n${result.problems.map(formatProblem).join('\n')}\n`)
    return 1
  },
  migrate: async (args) => {
    const config = readConfig(args)
    if (config === undefined) return 1
    const applied = await migrate({ url: config.database.url, dataDir: config.database.dataDir })
    process.stdout.write(applied.length === 0 ? 'migrations: up to date\n' : `migrations applied: ${applied.join(', ')}\n`)
    return 0
  },
  users: async (args) => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: {
        config: { type: 'string', short: 'c', default: 'gateway.yaml' },
        scopes: { type: 'string' },
        claim: { type: 'string', multiple: true },
        unset: { type: 'string', multiple: true },
        replace: { type: 'boolean', default: false },
        'password-stdin': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    })
    const [action, name] = positionals
    const usage = (problem?: string): number => {
      process.stderr.write((problem === undefined ? '' : `${problem}\n`) + USERS_USAGE)
      return 2
    }
    const actions = ['add', 'list', 'disable', 'enable', 'passwd', 'scopes', 'claims']
    if (action === undefined || !actions.includes(action)) return usage()
    if (action !== 'list' && name === undefined) return usage(`users ${action}: NAME is missing`)
    // `users scopes NAME` alone once cleared every scope: an explicit --scopes "" is now the way to do that
    if (action === 'scopes' && values.scopes === undefined) return usage('users scopes: --scopes is required (--scopes "" clears every scope)')
    if (action === 'claims' && values.claim === undefined && values.unset === undefined && !values.replace) {
      return usage('users claims: nothing to change (--claim k=v, --unset KEY, or --replace to clear)')
    }
    const config = readConfig(['-c', values.config])
    if (config === undefined) return 1
    const scopes = values.scopes?.split(/\s+/).filter(s => s !== '')
    const claims = parseClaims(values.claim ?? [])
    const store = await openAdminStore(config)
    const admin = adminOptions()
    try {
      const result = await auditedAction(admin, `users ${action}`, name, async () => {
        if (action === 'add') {
          const password = await readPassword({ fromStdin: values['password-stdin'], confirm: true })
          return await usersAdd(store, { name: name!, password, scopes: scopes ?? [], claims }, admin)
        }
        if (action === 'list') return await usersList(store)
        if (action === 'disable') return await usersDisable(store, name!, admin)
        if (action === 'enable') return await usersEnable(store, name!, admin)
        if (action === 'scopes') return await usersSetScopes(store, name!, scopes ?? [], admin)
        if (action === 'claims') return await usersUpdateClaims(store, name!, { set: claims, unset: values.unset, replace: values.replace }, admin)
        const password = await readPassword({ fromStdin: values['password-stdin'], confirm: true })
        return await usersPasswd(store, name!, password, admin)
      })
      process.stdout.write(JSON.stringify(result, null, 2) + '\n')
      return 0
    } finally {
      await store.close()
    }
  },
  sessions: async (args) => {
    const { values, positionals } = parseArgs({
      args,
      allowPositionals: true,
      options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' }, user: { type: 'string' }, session: { type: 'string' } },
    })
    const [action, user] = positionals
    const listing = action === 'list' && user !== undefined
    const revoking = action === 'revoke' && ((values.user === undefined) !== (values.session === undefined))
    if (!listing && !revoking) {
      process.stderr.write('usage: portcullis sessions list USER | sessions revoke (--user USER | --session SID)\n')
      return 2
    }
    const config = readConfig(['-c', values.config])
    if (config === undefined) return 1
    const admin = adminOptions()
    const store = await openAdminStore(config)
    try {
      const result = listing
        ? await auditedAction(admin, 'sessions list', user, async () => await sessionsList(store, user!, admin))
        : await auditedAction(admin, 'sessions revoke', values.user ?? values.session, async () =>
          ({ revoked: await sessionsRevoke(store, values.user !== undefined ? { user: values.user } : { session: values.session! }, admin) }))
      process.stdout.write(JSON.stringify(result, null, 2) + '\n')
      return 0
    } finally {
      await store.close()
    }
  },
  check: checkCommand,
  explain: async (args) => await explainCommand(args),
  keys: async (args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { alg: { type: 'string', default: 'EdDSA' }, kid: { type: 'string' }, out: { type: 'string' } } })
    if (positionals[0] !== 'generate' || values.kid === undefined || values.out === undefined) {
      process.stderr.write('usage: portcullis keys generate --alg EdDSA|ES256|RS256|PS256|HS256 --kid ID --out DIR\n')
      return 2
    }
    if (!(ALGORITHMS as readonly string[]).includes(values.alg)) {
      process.stderr.write(`--alg must be one of ${ALGORITHMS.join(', ')}\n`)
      return 2
    }
    try {
      const files = generateKey(values.alg as Algorithm, values.kid, values.out)
      process.stdout.write(`wrote ${files.privateFile}${files.publicFile === undefined ? '' : ` and ${files.publicFile}`}\n`)
      return 0
    } catch (err) {
      process.stderr.write(`cannot write the key: ${(err as Error).message}\n`)
      return 1
    }
  },
}

const USERS_USAGE = 'usage: portcullis users add NAME [--scopes "a b"] [--claim k=v]… [--password-stdin] | list | disable NAME | enable NAME\n' +
  '       | passwd NAME [--password-stdin] | scopes NAME --scopes "a b" (--scopes "" clears)\n' +
  '       | claims NAME [--claim k=v]… [--unset KEY]… [--replace]   (sets/removes claims; --replace: exactly the --claim ones)\n'

/** the store for the users/sessions commands, with the configured statement and lock timeouts */
async function openAdminStore (config: GatewayConfig): Promise<Store> {
  return await openStore({
    url: config.database.url,
    dataDir: config.database.dataDir,
    poolSize: 1,
    statementTimeoutMs: config.database.statementTimeoutMs,
    lockTimeoutMs: config.database.lockTimeoutMs,
  })
}

/** security events as JSON lines on stderr (stdout is the command's result) */
function adminOptions (): AdminOptions {
  const logger = pino({ base: { pid: process.pid }, level: 'info' }, pino.destination({ dest: 2, sync: true }))
  return {
    events: new SecurityEvents({ logger }),
  }
}

/** runs one operator command and records it as an admin_action security event, success or not */
async function auditedAction<T> (admin: AdminOptions, action: string, target: string | undefined, run: () => Promise<T>): Promise<T> {
  try {
    const result = await run()
    admin.events?.emit('admin_action', { action, via: 'cli', target, outcome: 'ok' })
    return result
  } catch (err) {
    admin.events?.emit('admin_action', { action, via: 'cli', target, outcome: 'error', code: err instanceof GatewayError ? err.code : undefined })
    throw err
  }
}

/**
 * `server.workers > 1`: this process becomes the primary (src/workers.ts). It proxies
 * nothing; its admin listener serves health, reload and — with a store and admin.token —
 * the admin API, whose revocations reach every worker through the revocation feed.
 */
async function startPrimary (config: GatewayConfig, loadConfig: () => GatewayConfig): Promise<void> {
  const logger = createLogger(config.logging.level)
  const store = config.admin.token === '' ? undefined : await openConfiguredStore(config)
  await runPrimary({
    config,
    loadConfig,
    logger,
    registerAdmin: async (admin, current) => {
      if (store === undefined) return
      const t = config.tokens
      const service = new SessionService({
        store,
        signAccessToken: () => { throw new Error('the primary issues no tokens') },
        options: { refreshTokenTtlSec: t.refreshTokenTtlSec, sessionMaxAgeSec: t.sessionMaxAgeSec, reuseGraceSec: t.refresh.reuseGraceSec, accessTokenTtlSec: t.accessTokenTtlSec, clockSkewSec: t.clockSkewSec },
      })
      await admin.register(adminApiPlugin, { token: config.admin.token, service, store, selfIssuer: () => current().tokens.issuer, trustedIssuers: () => current().issuers.map(i => i.issuer) })
    },
    close: async () => { await store?.close() },
  })
}

async function openConfiguredStore (config: GatewayConfig): Promise<Store> {
  return await openStore({
    url: config.database.url,
    listenUrl: config.database.listenUrl,
    dataDir: config.database.dataDir,
    poolSize: config.database.poolSize,
    statementTimeoutMs: config.database.statementTimeoutMs,
    lockTimeoutMs: config.database.lockTimeoutMs,
  })
}

/** `--claim roles=["a","b"] --claim tenant=acme`: JSON values where they parse, strings otherwise */
function parseClaims (pairs: string[]): Record<string, unknown> {
  const claims: Record<string, unknown> = {}
  for (const pair of pairs) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new Error(`--claim ${pair}: expected key=value`)
    const value = pair.slice(eq + 1)
    try {
      claims[pair.slice(0, eq)] = JSON.parse(value)
    } catch {
      claims[pair.slice(0, eq)] = value
    }
  }
  return claims
}

function readConfig (args: string[]): GatewayConfig | undefined {
  const { values } = parseArgs({ args, allowPositionals: true, options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' } } })
  try {
    return loadConfigFile(values.config, { env: process.env })
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(err.message + '\nrefusing to start.\n')
      return undefined
    }
    throw err
  }
}

export { routeTable } from './check.js'

export async function main (argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(USAGE)
    return name === undefined ? 2 : 0
  }
  const command = commands[name]
  if (command === undefined) {
    process.stderr.write(`unknown command "${name}"\n\n${USAGE}`)
    return 2
  }
  return command(rest)
}

// run only as the entry point (tests import routeTable and main)
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => { if (code >= 0) process.exitCode = code },
    (err: unknown) => {
      // known failures get their message; anything else too, but never a stack trace
      const code = err instanceof GatewayError ? ` (${err.code})` : ''
      process.stderr.write(`portcullis: ${(err as Error).message}${code}\n`)
      process.exitCode = 1
    }
  )
}
