#!/usr/bin/env node
import { realpathSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { loadConfigFile } from './config/load.js'
import { ConfigError } from './errors.js'
import { ALGORITHMS, type Algorithm, type GatewayConfig } from './config/types.js'
import { generateKey } from './tokens/keys.js'
import { buildGateway } from './app.js'
import { listen } from './server.js'

const USAGE = `portcullis — an API gateway that terminates authentication

usage:
  portcullis start   [-c gateway.yaml]         run the gateway
  portcullis check   [-c gateway.yaml]         validate the config and print the route table
  portcullis keys generate --alg EdDSA --kid k1 --out DIR
                                               write a new signing key (PEM) or HS256 secret
options:
  -c, --config FILE   configuration file (default ./gateway.yaml)
  -h, --help          this text
`

type Command = (args: string[]) => Promise<number>

const commands: Record<string, Command> = {
  start: async (args) => {
    const config = readConfig(args)
    if (config === undefined) return 1
    const gateway = await buildGateway(config)
    await listen(gateway)
    return -1 // keep running
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
      process.stderr.write(`portcullis: ${(err as Error).message}\n`)
      process.exitCode = 1
    }
  )
}
