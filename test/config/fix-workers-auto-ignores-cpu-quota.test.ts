import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { mkdirSync, rmdirSync, writeFileSync, accessSync, constants } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { cgroupCpuQuota, usableCores, type CgroupFiles } from '../../src/config/cpus.js'
import { baseConfig, makeKey } from '../fixtures/gateway.js'

// fix-workers-auto-ignores-cpu-quota (a stop 43 review of the Kubernetes manifests):
// `server.workers: auto` took Node's availableParallelism(), which counts the CPUs the process
// may run on, not its CFS quota: a pod limited to half a CPU on a 64-core node started 64
// workers (each with its own store pool, LISTEN connection and ~150 MB). `auto` is now the
// cgroup's quota, rounded up, at most the cores.

/** a cgroup file system as a test directory: what a container's looks like, without root */
function fakeCgroup (t: Test, membership: string, files: Record<string, string>, cores = 64): CgroupFiles {
  const dir = t.testdir({})
  for (const [path, text] of Object.entries(files)) {
    mkdirSync(join(dir, 'fs', path, '..'), { recursive: true })
    writeFileSync(join(dir, 'fs', path), text)
  }
  writeFileSync(join(dir, 'membership'), membership)
  return { root: join(dir, 'fs'), membership: join(dir, 'membership'), cores: () => cores }
}

const rows: Array<{ name: string, membership: string, files: Record<string, string>, cores?: number, want: number }> = [
  { name: 'v2, half a CPU', membership: '0::/\n', files: { 'cpu.max': '50000 100000\n' }, want: 1 },
  { name: 'v2, 1.5 CPUs: rounded up', membership: '0::/\n', files: { 'cpu.max': '150000 100000\n' }, want: 2 },
  { name: 'v2, no quota', membership: '0::/\n', files: { 'cpu.max': 'max 100000\n' }, want: 64 },
  { name: 'v2, a quota above the cores', membership: '0::/\n', files: { 'cpu.max': '800000 100000\n' }, cores: 4, want: 4 },
  { name: 'v2, the pod\'s limit on a parent of the container\'s cgroup', membership: '0::/kubepods/pod1/ctr\n', files: { 'kubepods/pod1/cpu.max': '200000 100000', 'kubepods/pod1/ctr/cpu.max': 'max 100000' }, want: 2 },
  { name: 'v2, a path the mount does not show (a cgroup namespace): the mount\'s root is the container\'s', membership: '0::/kubepods/pod1/ctr\n', files: { 'cpu.max': '100000 100000' }, want: 1 },
  { name: 'v1, cpu,cpuacct: 2 CPUs', membership: '12:memory:/x\n4:cpu,cpuacct:/docker/abc\n', files: { 'cpu,cpuacct/docker/abc/cpu.cfs_quota_us': '200000\n', 'cpu,cpuacct/docker/abc/cpu.cfs_period_us': '100000\n' }, want: 2 },
  { name: 'v1, no quota (-1)', membership: '1:cpu:/\n', files: { 'cpu/cpu.cfs_quota_us': '-1\n', 'cpu/cpu.cfs_period_us': '100000\n' }, want: 64 },
  { name: 'no cgroup files at all', membership: '0::/\n', files: {}, want: 64 },
  { name: 'garbage', membership: '0::/\n', files: { 'cpu.max': 'lots of CPUs' }, want: 64 },
]

for (const row of rows) {
  t.test(row.name, async t => {
    t.equal(usableCores(fakeCgroup(t, row.membership, row.files, row.cores)), row.want)
  })
}

const key = makeKey('EdDSA')
const POD_CONFIG = stringify(baseConfig(key, [{ name: 'api', prefix: '/api', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
  server: { workers: 'auto' },
  database: { url: 'postgres://portcullis@127.0.0.1:5432/portcullis' },
}))

const CGROUP_V1_CPU = '/sys/fs/cgroup/cpu'
/** only where the test may make a cgroup (root, a writable v1 cpu hierarchy); the rows above cover the reading either way */
const cgroupWritable = ((): boolean => {
  try {
    accessSync(join(CGROUP_V1_CPU, 'cgroup.procs'), constants.W_OK)
    return true
  } catch {
    return false
  }
})()

t.test('a real cgroup (v1 cpu controller, as root): a child process in it counts its quota', { skip: cgroupWritable ? false : 'no writable v1 cpu cgroup hierarchy here' }, async t => {
  const base = CGROUP_V1_CPU
  const group = join(base, `portcullis-test-${process.pid}`)
  mkdirSync(group)
  t.teardown(() => { try { rmdirSync(group) } catch {} })
  writeFileSync(join(group, 'cpu.cfs_period_us'), '100000')
  writeFileSync(join(group, 'cpu.cfs_quota_us'), '50000')
  // the child waits until it is in the group, then loads a configuration with workers: auto
  const child = spawn(process.execPath, ['--import', 'tsx', '-e', `
    process.stdin.once('data', async () => {
      const { loadConfigText } = await import(${JSON.stringify(join(process.cwd(), 'src/config/load.ts'))})
      const config = loadConfigText(${JSON.stringify(POD_CONFIG)}, { env: {} })
      process.stdout.write(String(config.server.workers))
      process.exit(0)
    })`], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  child.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const exited = new Promise(resolve => child.on('exit', resolve))
  writeFileSync(join(group, 'cgroup.procs'), String(child.pid))
  child.stdin.write('go\n')
  await exited
  t.equal(out, '1', 'half a CPU: workers: auto is one worker, though the machine has more cores')
})

t.test('this machine: never more than its cores', async t => {
  const quota = cgroupCpuQuota({ root: '/sys/fs/cgroup', membership: '/proc/self/cgroup', cores: () => 0 })
  t.ok(usableCores() >= 1, `at least one (${usableCores()}; quota ${String(quota)})`)
})
