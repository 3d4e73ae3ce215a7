/**
 * A throwaway PostgreSQL cluster on 127.0.0.1 for the PostgreSQL-mode runs: initdb into a
 * temp dir (as the `postgres` user when we are root — initdb refuses root), durability off
 * (fsync, synchronous_commit, full_page_writes), started with pg_ctl and stopped on exit.
 */
import { spawnSync } from 'node:child_process'
import { chownSync, existsSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

export const PG_BIN = ['/usr/lib/postgresql/17/bin', '/usr/lib/postgresql/16/bin', '/usr/lib/postgresql/15/bin'].find((d) => existsSync(join(d, 'initdb')))

export interface PgCluster {
  port: number
  url: (db: string) => string
  psql: (db: string, sql: string) => string
  createDb: (name: string) => void
  stop: () => void
}

function asPostgres (cmd: string, args: string[]): { status: number | null, out: string } {
  const isRoot = process.getuid?.() === 0
  const [c, a] = isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
  const r = spawnSync(c, a, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
  return { status: r.status, out: (r.stdout ?? '') + (r.stderr ?? '') }
}

/** undefined (with the reason in `why`) when no PostgreSQL server binaries are installed */
export function startPg (port: number, core: number | undefined, why: string[]): PgCluster | undefined {
  if (PG_BIN === undefined) { why.push('no PostgreSQL server binaries (apt-get install -y postgresql)'); return undefined }
  const isRoot = process.getuid?.() === 0
  if (isRoot && spawnSync('id', ['postgres']).status !== 0) { why.push('no `postgres` user to run initdb as (useradd --system postgres)'); return undefined }
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-bench-pg-'))
  if (isRoot) {
    const uid = Number(spawnSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    const gid = Number(spawnSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).stdout.trim())
    chownSync(dir, uid, gid)
  }
  const data = join(dir, 'data')
  const init = asPostgres(join(PG_BIN, 'initdb'), ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'])
  if (init.status !== 0) { why.push(`initdb failed: ${init.out.slice(-500)}`); rmSync(dir, { recursive: true, force: true }); return undefined }
  const opts = `-c listen_addresses=127.0.0.1 -c port=${port} -c unix_socket_directories=${dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200 -c shared_buffers=256MB`
  const pgCtl = join(PG_BIN, 'pg_ctl')
  const startArgs = ['-D', data, '-o', opts, '-l', join(dir, 'pg.log'), '-w', 'start']
  const st = core === undefined ? asPostgres(pgCtl, startArgs) : asPostgres('taskset', ['-c', String(core), pgCtl, ...startArgs])
  if (st.status !== 0) { why.push(`pg_ctl start failed: ${st.out.slice(-500)}`); rmSync(dir, { recursive: true, force: true }); return undefined }
  let stopped = false
  const psql = (db: string, sql: string): string => {
    const r = spawnSync('psql', ['-X', '-q', '-t', '-A', '-v', 'ON_ERROR_STOP=1', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', db, '-c', sql], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 })
    if (r.status !== 0) throw new Error(`psql ${db}: ${r.stderr}`)
    return r.stdout.trim()
  }
  return {
    port,
    url: (db) => `postgres://postgres@127.0.0.1:${port}/${db}`,
    psql,
    createDb: (name) => { psql('postgres', `CREATE DATABASE ${name}`) },
    stop: () => {
      if (stopped) return
      stopped = true
      asPostgres(pgCtl, ['-D', data, '-m', 'immediate', 'stop'])
      rmSync(dir, { recursive: true, force: true })
    },
  }
}
