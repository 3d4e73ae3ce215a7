#!/usr/bin/env node
// Only what the entry needs is imported here; each command loads the rest when it runs.
// Loading all of it takes ~0.8 s, and `start` must hold SIGHUP before that: a reload signal
// sent while the modules loaded ended the gateway (fix-sighup-during-startup).
import { existsSync, readFileSync, readlinkSync, realpathSync } from 'node:fs'
import { basename, isAbsolute, join, resolve, sep } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { ConfigError, ErrorCode, formatProblem, GatewayError } from './errors.js'
import type { Algorithm, GatewayConfig } from './config/types.js'
import { holdEarlyStop, holdReloadSignal, listen, type ReloadSignal } from './server.js'
import type { Store } from './sessions/store.js'
import type { AdminOptions } from './sessions/admin-commands.js'
import type { ReloadResult } from './app.js'

const USAGE = `portcullis — an API gateway that terminates authentication

usage:
  portcullis start   [-c gateway.yaml]         run the gateway
  portcullis check   [-c gateway.yaml] [--offline]
                                               validate the config; print the route table, the
                                               issuers' key state (one fetch each unless --offline)
                                               and warnings about overlapping routes
  portcullis explain [-c gateway.yaml] METHOD URL [--token T | --claims JSON] [-H "name: value"]…
                     [--peer ADDR] [--json]    what the gateway would do with this request (route,
                                               rule, decision, upstream URL and headers); no network;
                                               --token - reads the token from stdin
  portcullis reload  [-c gateway.yaml] [--pid PID]
                                               load the file again in the running gateway (admin API,
                                               or SIGHUP to PID, which must be a \`portcullis start\`);
                                               on any problem the old one stays
  portcullis keys generate --alg EdDSA --kid k1 --out DIR
                                               write a new signing key (PEM) or HS256 secret; never
                                               overwrites, refuses a group/world-writable DIR
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
    // first of all: from here on a SIGHUP never ends the process; one that comes while the
    // gateway starts is remembered and reloads once it listens (a worker's is dropped: the
    // primary reloads the fleet)
    const reloadSignal = holdReloadSignal()
    // and until it listens, a SIGTERM or SIGINT ends it at once, even as PID 1 of a container
    holdEarlyStop()
    const { configFromPrimary, isWorker, serveAsWorker } = await import('./workers.js')
    const worker = isWorker()
    // a worker runs the configuration its primary read, never the file (src/workers.ts)
    const config = worker ? await configFromPrimary() : await readConfig(args)
    if (config === undefined) return 1
    const { loadConfigFile } = await import('./config/load.js')
    const reread = (): GatewayConfig => loadConfigFile(config.source, { env: process.env })
    if (config.server.workers > 1 && !worker) {
      await startPrimary(config, reread, reloadSignal)
      return -1
    }
    // fail closed: without the store there is no denylist, so the gateway does not start
    const store = await openConfiguredStore(config)
    const { buildGateway } = await import('./app.js')
    // a worker's reloads are handed to it by the primary
    const gateway = await buildGateway(config, { store, loadConfig: worker ? undefined : reread })
    const l = await listen(gateway, { admin: !worker, reloadSignal })
    if (worker) serveAsWorker(gateway, l.port)
    return -1 // keep running
  },
  reload: async (args) => {
    const { values } = parseArgs({ args, allowPositionals: false, options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' }, pid: { type: 'string' } } })
    if (values.pid !== undefined) {
      // a gateway without an admin token: signal it; the outcome is in its log
      const target = gatewayPid(values.pid)
      if ('refused' in target) {
        process.stderr.write(`reload: ${target.refused}\n`)
        return 2
      }
      process.kill(target.pid, 'SIGHUP')
      process.stdout.write(`sent SIGHUP to ${target.pid}; the gateway logs the outcome\n`)
      return 0
    }
    const config = await readConfig(['-c', values.config])
    if (config === undefined) return 1
    if (config.admin.token === '') {
      process.stderr.write('reload goes through the admin API, which needs admin.token; without one use --pid PID (SIGHUP)\n')
      return 2
    }
    return await reloadThroughAdminApi(config)
  },
  migrate: async (args) => {
    const config = await readConfig(args)
    if (config === undefined) return 1
    const { migrate } = await import('./sessions/admin-commands.js')
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
    const config = await readConfig(['-c', values.config])
    if (config === undefined) return 1
    const scopes = values.scopes?.split(/\s+/).filter(s => s !== '')
    const claims = parseClaims(values.claim ?? [])
    const [{ usersAdd, usersDisable, usersEnable, usersList, usersPasswd, usersSetScopes, usersUpdateClaims }, { readPassword }] =
      await Promise.all([import('./sessions/admin-commands.js'), import('./sessions/read-password.js')])
    const store = await openAdminStore(config)
    const admin = await adminOptions()
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
    const config = await readConfig(['-c', values.config])
    if (config === undefined) return 1
    const { sessionsList, sessionsRevoke } = await import('./sessions/admin-commands.js')
    const admin = await adminOptions()
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
  check: async (args) => await (await import('./check.js')).checkCommand(args),
  explain: async (args) => await (await import('./explain/format.js')).explainCommand(args),
  keys: async (args) => {
    const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { alg: { type: 'string', default: 'EdDSA' }, kid: { type: 'string' }, out: { type: 'string' } } })
    if (positionals[0] !== 'generate' || values.kid === undefined || values.out === undefined) {
      process.stderr.write('usage: portcullis keys generate --alg EdDSA|ES256|RS256|PS256|HS256 --kid ID --out DIR\n')
      return 2
    }
    const [{ ALGORITHMS }, { generateKey }] = await Promise.all([import('./config/types.js'), import('./tokens/keys.js')])
    if (!(ALGORITHMS as readonly string[]).includes(values.alg)) {
      process.stderr.write(`--alg must be one of ${ALGORITHMS.join(', ')}\n`)
      return 2
    }
    try {
      const files = generateKey(values.alg as Algorithm, values.kid, values.out)
      process.stdout.write(`wrote ${files.privateFile}${files.publicFile === undefined ? '' : ` and ${files.publicFile}`}\n`)
      return 0
    } catch (err) {
      // a kid the config refuses or a directory others may write to: 2, as a usage error; a
      // key already there stays 1 (EEXIST), as it always was, for the scripts that rely on it
      if (err instanceof GatewayError && err.code === ErrorCode.invalidUserInput) {
        process.stderr.write(`keys generate: ${err.message}\n`)
        return 2
      }
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
  const { openStore } = await import('./sessions/store.js')
  return await openStore({
    url: config.database.url,
    dataDir: config.database.dataDir,
    poolSize: 1,
    statementTimeoutMs: config.database.statementTimeoutMs,
    lockTimeoutMs: config.database.lockTimeoutMs,
  })
}

/** security events as JSON lines on stderr (stdout is the command's result) */
async function adminOptions (): Promise<AdminOptions> {
  const [{ pino }, { SecurityEvents }] = await Promise.all([import('pino'), import('./security-events.js')])
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
 * the admin API, whose revocations reach every worker through the revocation feed. Its
 * security events (admin_action, user_revoked, jti_revoked…) are the primary's, logged and
 * counted in its /metrics as a single process's are (fix-workers-admin-audit).
 */
async function startPrimary (config: GatewayConfig, loadConfig: () => GatewayConfig, reloadSignal: ReloadSignal): Promise<void> {
  const [{ runPrimary }, { createLogger }, { default: adminApiPlugin }, { SessionService }] = await Promise.all([
    import('./workers.js'), import('./logger.js'), import('../plugins/admin-api.js'), import('./sessions/service.js'),
  ])
  const logger = createLogger(config.logging.level)
  const store = config.admin.token === '' ? undefined : await openConfiguredStore(config)
  await runPrimary({
    config,
    loadConfig,
    logger,
    reloadSignal,
    registerAdmin: async (admin, { current, events }) => {
      if (store === undefined) return
      const t = config.tokens
      const service = new SessionService({
        store,
        signAccessToken: () => { throw new Error('the primary issues no tokens') },
        events,
        options: { refreshTokenTtlSec: t.refreshTokenTtlSec, sessionMaxAgeSec: t.sessionMaxAgeSec, reuseGraceSec: t.refresh.reuseGraceSec, accessTokenTtlSec: t.accessTokenTtlSec, clockSkewSec: t.clockSkewSec },
      })
      await admin.register(adminApiPlugin, { token: config.admin.token, service, store, selfIssuer: () => current().tokens.issuer, trustedIssuers: () => current().issuers.map(i => i.issuer), events })
    },
    close: async () => { await store?.close() },
  })
}

/** the largest pid_t (a signed 32-bit int); Linux's own pid_max is at most 2^22 */
const MAX_PID = 2_147_483_647

/**
 * `reload --pid P`: the PID to send SIGHUP to, or why not (fix-cli-inputs-unchecked). `P` was
 * once `Number(P)` unchecked, and kill(2) reads 0 and negative numbers as process groups:
 * `--pid ""` (an empty pid file) became 0 and hung up the caller's whole process group, `-1`
 * would hang up every process the caller may signal, `abc` crashed with a TypeError. So P is
 * a decimal number of 2 or more (1 is init, never ours to hang up; the container image's
 * gateway, PID 1 there, is reloaded from outside the container or by the admin API), and
 * the process must be a gateway: its /proc/P/cmdline is node running a portcullis
 * CLI with `start` after it. A portcullis CLI is the `portcullis` bin, or a `cli.js`/`cli.ts`
 * that is this very file (a relative path read against /proc/P/cwd) or lies in a
 * `portcullis` directory (another installation). `start` is required because every other
 * command — `users`, `migrate`, this `reload` — ends on a SIGHUP; only `start` holds it.
 * Without /proc (macOS, the BSDs) nothing can be confirmed, and a wrong PID costs someone
 * else's process, so it is refused with the way round it (kill -HUP, the admin API). A PID
 * reused between the check and the signal is a race left open: Node has no pidfd.
 */
export function gatewayPid (text: string, procDir = '/proc'): { pid: number } | { refused: string } {
  const pid = /^[1-9][0-9]{0,9}$/.test(text) ? Number(text) : Number.NaN
  if (!(pid <= MAX_PID)) return { refused: `--pid ${JSON.stringify(text.slice(0, 40))} is not a process id (a decimal number of 2 or more)` }
  if (pid === 1) return { refused: '--pid 1 is the init process, never signalled (a gateway that is PID 1 of a container: docker kill --signal HUP, or the admin API)' }
  if (pid === process.pid) return { refused: `--pid ${pid} is this command itself` }
  if (!existsSync(join(procDir, 'self'))) {
    return { refused: `cannot confirm that ${pid} is a portcullis gateway without ${procDir}: send the signal yourself (kill -HUP ${pid}) or reload through the admin API (admin.token)` }
  }
  let argv: string[]
  try {
    argv = readFileSync(join(procDir, String(pid), 'cmdline'), 'utf8').split('\0').filter(a => a !== '')
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    return { refused: code === 'ENOENT' ? `no process ${pid}` : `cannot read ${join(procDir, String(pid), 'cmdline')} (${code ?? 'error'}) to confirm that ${pid} is a portcullis gateway` }
  }
  const cwd = (): string | undefined => { try { return readlinkSync(join(procDir, String(pid), 'cwd')) } catch { return undefined } }
  const script = argv.findIndex((a, i) => i > 0 && isPortcullisCli(a, cwd))
  if (!/^node(js)?[0-9.]*(\.exe)?$/.test(basename(argv[0] ?? '')) || script === -1 || !argv.slice(script + 1).includes('start')) {
    // its program only: the rest of a command line can hold another program's secrets
    return { refused: `process ${pid} (${JSON.stringify(basename(argv[0] ?? '').slice(0, 40))}) is not a portcullis gateway (\`portcullis start\`), not signalled` }
  }
  return { pid }
}

function isPortcullisCli (arg: string, cwd: () => string | undefined): boolean {
  const name = basename(arg)
  if (name === 'portcullis') return true
  if (name !== 'cli.js' && name !== 'cli.ts') return false
  if (arg.split(sep).includes('portcullis')) return true
  const base = isAbsolute(arg) ? '' : cwd()
  if (base === undefined) return false
  try {
    return realpathSync(resolve(base, arg)) === realpathSync(fileURLToPath(import.meta.url))
  } catch {
    return false
  }
}

/** how long `portcullis reload` waits for the answer (a fleet waits up to 10 s for its workers) */
const RELOAD_REQUEST_TIMEOUT_MS = 30_000

/**
 * `portcullis reload` through POST /admin/reload of the running gateway. Anything but a reload
 * result (200, or 422 with the problems) is one line and exit 1: the running gateway's token
 * or admin port is not the file's (both change only with a restart), or something else answers
 * there. Reading a 401's body as a result once crashed with "Cannot read properties of
 * undefined" (fix-reload-cli-refused).
 */
async function reloadThroughAdminApi (config: GatewayConfig): Promise<number> {
  const refused = (message: string): number => {
    process.stderr.write(`reload failed: ${message}\n`)
    return 1
  }
  const host = config.admin.host === '0.0.0.0' || config.admin.host === '::' ? '127.0.0.1' : config.admin.host
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${config.admin.port}/admin/reload`
  let res: Response
  try {
    res = await fetch(url, { method: 'POST', headers: { authorization: `Bearer ${config.admin.token}` }, signal: AbortSignal.timeout(RELOAD_REQUEST_TIMEOUT_MS) })
  } catch (err) {
    // fetch says "fetch failed"; the reason is in its cause (ECONNREFUSED) or its name (TimeoutError)
    const cause = (err as { cause?: { code?: unknown } }).cause?.code
    const reason = typeof cause === 'string' ? cause : (err as Error).name
    return refused(`no answer from the admin API at ${url} (${reason}): is the gateway running, with the admin.host and admin.port of ${config.source}? (they change only with a restart)`)
  }
  const answer = await res.json().catch(() => undefined) as (Partial<ReloadResult> & { code?: unknown }) | undefined
  if ((res.status === 200 || res.status === 422) && typeof answer?.ok === 'boolean' && typeof answer.hash === 'string' && Array.isArray(answer.problems)) {
    if (answer.ok) {
      process.stdout.write(`reloaded: configuration ${answer.hash.slice(0, 12)} in force\n`)
      return 0
    }
    process.stderr.write(`reload refused; configuration ${answer.hash.slice(0, 12)} stays in force:\n${answer.problems.map(formatProblem).join('\n')}\n`)
    return 1
  }
  if (res.status === 401) return refused(`the admin API refused the token (401): the admin.token of ${config.source} is not the running gateway's (admin.token changes only with a restart)`)
  const code = typeof answer?.code === 'string' ? ` ${answer.code.slice(0, 64)}` : ''
  return refused(`the admin API at ${url} answered ${res.status}${code}, not a reload result; the gateway's log says whether anything changed`)
}

async function openConfiguredStore (config: GatewayConfig): Promise<Store> {
  const { openStore } = await import('./sessions/store.js')
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

async function readConfig (args: string[]): Promise<GatewayConfig | undefined> {
  const { values } = parseArgs({ args, allowPositionals: true, options: { config: { type: 'string', short: 'c', default: 'gateway.yaml' } } })
  const { loadConfigFile } = await import('./config/load.js')
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

// run only as the entry point (main can be imported)
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
