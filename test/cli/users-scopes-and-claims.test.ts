/**
 * Regression (issue 9 item 9): `portcullis users scopes NAME` without `--scopes` silently
 * cleared every scope, and user claims could not be changed after creation. Now a bare
 * `users scopes NAME` is a usage error (exit 2, nothing changed), `--scopes ""` clears
 * explicitly, and `users claims NAME --claim k=v … [--unset KEY] [--replace]` edits claims.
 * The CLI runs as an operator runs it: a child process against a real PostgreSQL.
 */
import t from 'tap'
import { execFile } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { stringify } from 'yaml'
import { openStore } from '../../src/sessions/store.js'
import { makeKey } from '../fixtures/keys.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

const ROOT = resolve(import.meta.dirname, '..', '..')

interface Run { code: number | null, stdout: string, stderr: string }

function cli (args: string[], stdin?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : null
        resolve({ code, stdout, stderr })
      })
    child.stdin?.end(stdin ?? '')
  })
}

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  const url = await cluster.createDatabase('cli_users')
  const key = makeKey('EdDSA')
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-cli-users-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  await writeFile(join(dir, 'gateway.yaml'), stringify({
    database: { url },
    tokens: { issuer: 'https://auth.test', audience: 'api.test', algorithm: 'EdDSA', keys: [{ kid: 'k1', privateKey: key.privatePem }] },
    routes: [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:4001', auth: 'required', scopes: { '*': ['orders:read'] } }],
  }))
  const config = join(dir, 'gateway.yaml')
  const store = await openStore({ url })
  t.teardown(() => store.close())
  const userOf = async (name: string): Promise<{ scopes: string[], claims: Record<string, unknown> }> => (await store.findUserByName(name))!

  const added = await cli(['users', 'add', 'alice', '-c', config, '--scopes', 'orders:read orders:write', '--claim', 'tenant=t1', '--claim', 'roles=["a"]', '--password-stdin'], 'pw-alice\n')
  t.equal(added.code, 0, `users add (stderr: ${added.stderr})`)

  t.test('users scopes NAME without --scopes is an error and changes nothing', async (t) => {
    const run = await cli(['users', 'scopes', 'alice', '-c', config])
    t.equal(run.code, 2, 'usage error')
    t.match(run.stderr, /--scopes is required.*--scopes "" clears/)
    t.same((await userOf('alice')).scopes, ['orders:read', 'orders:write'], 'scopes untouched (they were all cleared before the fix)')
  })

  t.test('--scopes sets, --scopes "" clears explicitly', async (t) => {
    const set = await cli(['users', 'scopes', 'alice', '-c', config, '--scopes', 'admin'])
    t.equal(set.code, 0, set.stderr)
    t.same(JSON.parse(set.stdout).scopes, ['admin'])
    const cleared = await cli(['users', 'scopes', 'alice', '-c', config, '--scopes', ''])
    t.equal(cleared.code, 0, cleared.stderr)
    t.same((await userOf('alice')).scopes, [])
  })

  t.test('users claims changes claims after creation', async (t) => {
    const set = await cli(['users', 'claims', 'alice', '-c', config, '--claim', 'tenant=t2', '--claim', 'level=3'])
    t.equal(set.code, 0, set.stderr)
    t.same((await userOf('alice')).claims, { tenant: 't2', roles: ['a'], level: 3 }, 'set and added, others kept')
    t.match(set.stderr, /"msg":"security_event"/, 'the action is a security event on stderr')
    t.match(set.stderr, /"event":"admin_action".*"action":"users claims".*"via":"cli".*"target":"alice"/)
    t.same(JSON.parse(set.stdout).claims, { tenant: 't2', roles: ['a'], level: 3 }, 'stdout is the result only')

    const unset = await cli(['users', 'claims', 'alice', '-c', config, '--unset', 'level'])
    t.equal(unset.code, 0, unset.stderr)
    t.same((await userOf('alice')).claims, { tenant: 't2', roles: ['a'] })

    const replaced = await cli(['users', 'claims', 'alice', '-c', config, '--replace', '--claim', 'tenant=t3'])
    t.equal(replaced.code, 0, replaced.stderr)
    t.same((await userOf('alice')).claims, { tenant: 't3' })

    const reserved = await cli(['users', 'claims', 'alice', '-c', config, '--claim', 'sub=root'])
    t.equal(reserved.code, 1, 'a reserved claim is refused')
    t.match(reserved.stderr, /claims\/sub: is reserved.*invalid_user_input/)
    t.same((await userOf('alice')).claims, { tenant: 't3' }, 'unchanged')

    const nothing = await cli(['users', 'claims', 'alice', '-c', config])
    t.equal(nothing.code, 2, 'nothing to change is a usage error')
    const cleared = await cli(['users', 'claims', 'alice', '-c', config, '--replace'])
    t.equal(cleared.code, 0, cleared.stderr)
    t.same((await userOf('alice')).claims, {}, '--replace alone clears')

    const unknown = await cli(['users', 'claims', 'nobody', '-c', config, '--claim', 'a=b'])
    t.equal(unknown.code, 1)
    t.match(unknown.stderr, /user_not_found/)
  })
}
