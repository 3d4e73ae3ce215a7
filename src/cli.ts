#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfigFile } from './config/load.js'
import { ConfigError, GatewayError } from './errors.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig } from './config/types.js'
import { generateKey } from './tokens/keys.js'
import { buildGateway } from './app.js'
import { listen } from './server.js'
import { openStore, type Store } from './sessions/store.js'
import { readPassword } from './sessions/read-password.js'
import {
  migrate, sessionsList, sessionsRevoke, usersAdd, usersDisable, usersEnable, usersList, usersPasswd, usersSetScopes,
} from './sessions/admin-commands.js'

const USAGE = `portcullis — an API gateway that terminates authentication

usage:
  portcullis start   [-c gateway.yaml]         run the gateway
  portcullis check   [-c gateway.yaml]         validate the config and print the route table
  portcullis keys generate --alg EdDSA --kid k1 --out DIR
                                               write a new signing key (PEM) or HS256 secret
  portcullis migrate [-c gateway.yaml]         apply database migrations (start does it too)
  portcullis users add NAME [--scopes "a b"] [--claim k=v]… [--password-stdin]
  portcullis users list | disable NAME | enable NAME | passwd NAME | scopes NAME --scopes "a b"
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
    const config = readConfig(args)
    if (config === undefined) return 1
    // fail closed: without the store there is no denylist, so the gateway does not start
    const store = await openConfiguredStore(config)
    const gateway = await buildGateway(config, { store })
    await listen(gateway)
    return -1 // keep running
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
        'password-stdin': { type: 'boolean', default: false },
        json: { type: 'boolean', default: false },
      },
    })
    const [action, name] = positionals
    const config = readConfig(['-c', values.config])
    if (config === undefined) return 1
    const needsName = action === 'add' || action === 'disable' || action === 'enable' || action === 'passwd' || action === 'scopes'
    if (action === undefined || (needsName && name === undefined) || !['add', 'list', 'disable', 'enable', 'passwd', 'scopes'].includes(action)) {
      process.stderr.write('usage: portcullis users add NAME [--scopes "a b"] [--claim k=v]… [--password-stdin] | list | disable NAME | enable NAME | passwd NAME [--password-stdin] | scopes NAME --scopes "a b"\n')
      return 2
    }
    const admin = { accessTokenTtlSec: config.tokens.accessTokenTtlSec, clockSkewSec: config.tokens.clockSkewSec }
    const scopes = values.scopes?.split(/\s+/).filter(s => s !== '')
    const store = await openConfiguredStore(config)
    try {
      let result: unknown
      if (action === 'add') {
        const password = await readPassword({ fromStdin: values['password-stdin'], confirm: true })
        result = await usersAdd(store, { name: name!, password, scopes: scopes ?? [], claims: parseClaims(values.claim ?? []) }, admin)
      } else if (action === 'list') result = await usersList(store)
      else if (action === 'disable') result = await usersDisable(store, name!, admin)
      else if (action === 'enable') result = await usersEnable(store, name!, admin)
      else if (action === 'scopes') result = await usersSetScopes(store, name!, scopes ?? [], admin)
      else {
        const password = await readPassword({ fromStdin: values['password-stdin'], confirm: true })
        result = await usersPasswd(store, name!, password, admin)
      }
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
    const admin = { accessTokenTtlSec: config.tokens.accessTokenTtlSec, clockSkewSec: config.tokens.clockSkewSec }
    const store = await openConfiguredStore(config)
    try {
      const result = listing
        ? await sessionsList(store, user!, admin)
        : { revoked: await sessionsRevoke(store, values.user !== undefined ? { user: values.user } : { session: values.session! }, admin) }
      process.stdout.write(JSON.stringify(result, null, 2) + '\n')
      return 0
    } finally {
      await store.close()
    }
  },
  check: async (args) => {
    const config = readConfig(args)
    if (config === undefined) return 1
    process.stdout.write(`${config.source}: ok (${config.routes.length} routes, ${config.tokens.algorithm}, ${config.tokens.keys.length} keys)\n\n`)
    process.stdout.write(routeTable(config) + '\n')
    return 0
  },
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

async function openConfiguredStore (config: GatewayConfig): Promise<Store> {
  return await openStore({ url: config.database.url, dataDir: config.database.dataDir, poolSize: config.database.poolSize })
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

export function routeTable (config: GatewayConfig): string {
  const rows = [['ROUTE', 'PREFIX', 'UPSTREAM', 'AUTH', 'METHODS', 'SCOPES']]
  for (const r of config.routes) {
    const scopes = Object.entries(r.scopes).map(([m, s]) => `${m}: ${s.anyOf.length > 0 ? `anyOf(${s.anyOf.join(' ')})` : s.allOf.join(' ')}`).join('; ')
    rows.push([r.name, r.prefix, r.upstreamOrigin + r.rewritePrefix, r.auth, r.methods?.join(',') ?? '*', scopes || '-'])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map(row => row[i]!.length)))
  return rows.map(row => row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n')
}

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
