import { readFileSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { join } from 'node:path'

/**
 * How many processes `server.workers: auto` starts: the cores this process may use, which in a
 * container is its CPU quota, not the machine's cores. Node's availableParallelism() counts the
 * CPUs the process may be scheduled on (its affinity), not a CFS quota: a pod limited to half
 * a CPU on a 64-core node got 64 workers, each with its own pool and memory (a stop 43 review
 * of the Kubernetes manifests, measured on Node 20 and 22). The quota is read from the cgroup
 * the process is in (v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), the
 * smallest along its path to the root, rounded up to whole cores; no quota → the cores.
 * Read once, when a configuration is loaded.
 */
export function usableCores (fs: CgroupFiles = HOST): number {
  const cores = fs.cores()
  const quota = cgroupCpuQuota(fs)
  return quota === undefined ? cores : Math.max(1, Math.min(cores, Math.ceil(quota)))
}

/** where the cgroup files are read from: this host's, or a test's stand-in directory */
export interface CgroupFiles {
  /** the cgroup file system's mount point (`/sys/fs/cgroup`) */
  root: string
  /** this process's cgroup membership (`/proc/self/cgroup`) */
  membership: string
  cores: () => number
}

const HOST: CgroupFiles = { root: '/sys/fs/cgroup', membership: '/proc/self/cgroup', cores: availableParallelism }

/** the CPU quota in cores (1.5 = one and a half), or undefined when none applies */
export function cgroupCpuQuota (fs: CgroupFiles): number | undefined {
  const membership = read(fs.membership)
  if (membership === undefined) return undefined
  let smallest: number | undefined
  for (const line of membership.split('\n')) {
    // hierarchy-id:controllers:path — v2 is `0::/path`, v1 names its controllers (`4:cpu,cpuacct:/path`)
    const [, controllers, path] = /^\d+:([^:]*):(\/.*)$/.exec(line) ?? []
    if (controllers === undefined || path === undefined) continue
    const v2 = controllers === ''
    if (!v2 && !controllers.split(',').includes('cpu')) continue
    const base = v2 ? fs.root : join(fs.root, controllers)
    // from the process's own cgroup up to the root: a parent's limit holds for its children
    for (let dir = path; ; dir = dir.slice(0, dir.lastIndexOf('/')) || '/') {
      const cores = v2 ? quotaV2(join(base, dir)) : quotaV1(join(base, dir))
      if (cores !== undefined && (smallest === undefined || cores < smallest)) smallest = cores
      if (dir === '/') break
    }
  }
  return smallest
}

/** `cpu.max`: "max 100000" (none) or "50000 100000" (quota and period, µs) */
function quotaV2 (dir: string): number | undefined {
  const [quota, period] = (read(join(dir, 'cpu.max')) ?? '').trim().split(/\s+/)
  return ratio(quota, period)
}

/** cpu.cfs_quota_us (-1: none) over cpu.cfs_period_us */
function quotaV1 (dir: string): number | undefined {
  return ratio(read(join(dir, 'cpu.cfs_quota_us'))?.trim(), read(join(dir, 'cpu.cfs_period_us'))?.trim())
}

function ratio (quota: string | undefined, period: string | undefined): number | undefined {
  const q = Number(quota)
  const p = Number(period)
  return Number.isFinite(q) && q > 0 && Number.isFinite(p) && p > 0 ? q / p : undefined
}

function read (file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8')
  } catch {
    return undefined
  }
}
