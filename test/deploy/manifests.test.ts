import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { ConfigError } from '../../src/errors.js'
import { trustFunction } from '../../src/pipeline/trust.js'
import { makeKey } from '../fixtures/keys.js'
import {
  containerOf, loadManifests, probeProblems, resolvePort, scaleTargetProblems, schemaProblems, selectorProblems,
  serviceProblems, type K8sObject, type Manifest,
} from './k8s-checks.js'

// deploy/kubernetes, checked offline: every object against the Kubernetes schema of its
// apiVersion/kind, the facts that tie the objects together, and the ConfigMap's gateway.yaml
// against the gateway's own loader, as the pod would load it. Also .dockerignore, which decides
// what reaches the image's build stage.

const DIR = fileURLToPath(new URL('../../deploy/kubernetes/', import.meta.url))
const REPO = fileURLToPath(new URL('../../', import.meta.url))
const CONFIG_PATH = '/etc/portcullis/gateway.yaml' // where the Deployment mounts the ConfigMap's file
/** an ingress controller's pod CIDR, as an operator would put in TRUSTED_PROXY_CIDR */
const EXAMPLE_POD_CIDR = '10.244.0.0/16'
/** PostgreSQL's default max_connections (100), minus a reserve: superuser_reserved_connections, migrations, draining pods, tools */
const MAX_GATEWAY_CONNECTIONS = 90
const PROBES = {
  readinessProbe: { path: '/readyz', portName: 'admin' },
  livenessProbe: { path: '/healthz', portName: 'admin' },
  startupProbe: { path: '/healthz', portName: 'admin' },
}

const set = loadManifests(DIR)
const find = (kind: string, name?: string): K8sObject => {
  const found = set.objects.filter(m => m.object.kind === kind && (name === undefined || m.object.metadata?.name === name))
  if (found.length !== 1) throw new Error(`expected one ${kind}${name === undefined ? '' : `/${name}`}, found ${found.length}`)
  return (found[0] as Manifest).object
}
const deployment = find('Deployment')
const container = containerOf(deployment)
const configMap = find('ConfigMap')
const gatewayYaml = configMap.data['gateway.yaml'] as string
const podSpec = deployment.spec.template.spec as K8sObject
const mountAt = (path: string): K8sObject | undefined => (container.volumeMounts as K8sObject[]).find(m => m.mountPath === path)
const volume = (name: string): K8sObject | undefined => (podSpec.volumes as K8sObject[]).find(v => v.name === name)
const secretValues = (secret: K8sObject): Record<string, string> => ({
  ...Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(String(v), 'base64').toString()])),
  ...secret.stringData,
})

/** a value for every variable the container sets, as the pod would have them */
function podEnv (): Record<string, string> {
  const env: Record<string, string> = {}
  for (const e of container.env as K8sObject[]) env[e.name] = randomBytes(32).toString('base64url')
  env.DATABASE_URL = 'postgres://portcullis:pw@127.0.0.1:5432/portcullis'
  env.TRUSTED_PROXY_CIDR = EXAMPLE_POD_CIDR
  return env
}

/** the ConfigMap's gateway.yaml loaded by the gateway's loader, its key files in a temp dir laid out as in the pod */
function loadPodConfig (t: Test, env: Record<string, string>, keyText?: string): ReturnType<typeof loadConfigText> {
  const base = mkdtempSync(join(tmpdir(), 'portcullis-k8s-'))
  t.teardown(() => rmSync(base, { recursive: true, force: true }))
  const raw = parse(gatewayYaml) as K8sObject
  for (const k of raw.tokens.keys as K8sObject[]) {
    if (k.privateKeyFile === undefined) continue
    const file = join(base, k.privateKeyFile)
    mkdirSync(join(file, '..'), { recursive: true })
    writeFileSync(file, keyText ?? makeKey('EdDSA', k.kid).privatePem, { mode: 0o600 })
  }
  return loadConfigText(gatewayYaml, { env, baseDir: base }, 'deploy/kubernetes/configmap.yaml#gateway.yaml')
}

function configProblemPaths (fn: () => unknown): string[] {
  try {
    fn()
    return []
  } catch (err) {
    if (err instanceof ConfigError) return [...new Set(err.problems.map(p => p.path))]
    throw err
  }
}

/** the Service ports that lead to the container's admin port */
function adminServicePorts (service: K8sObject): K8sObject[] {
  const admin = resolvePort(container, 'admin')
  return (service.spec.ports as K8sObject[]).filter(p => resolvePort(container, p.targetPort ?? p.port) === admin)
}

const EVERYONE = 'everyone'

/** A NetworkPolicy port entry covers a container port: by name or number, or a range with endPort; no port = every port. */
function coversPort (entry: K8sObject, port: number): boolean {
  if (entry.port === undefined) return true
  if (typeof entry.port === 'number' && entry.endPort !== undefined) return port >= entry.port && port <= entry.endPort
  return resolvePort(container, entry.port) === port
}

/** The peers a NetworkPolicy's ingress rules let reach a container port, as JSON; EVERYONE for a rule or peer open to all. */
function policyPeers (policy: K8sObject, port: number): string[] {
  const peers: string[] = []
  for (const rule of (policy.spec.ingress ?? []) as K8sObject[]) {
    const ports = (rule.ports ?? []) as K8sObject[]
    if (ports.length > 0 && !ports.some(p => coversPort(p, port))) continue
    const from = (rule.from ?? []) as K8sObject[]
    if (from.length === 0) peers.push(EVERYONE)
    for (const peer of from) {
      const anyNamespace = peer.namespaceSelector !== undefined && Object.keys(peer.namespaceSelector).length === 0
      const anyPod = peer.podSelector === undefined || Object.keys(peer.podSelector).length === 0
      const anyAddress = /\/0$/.test(peer.ipBlock?.cidr ?? '')
      peers.push((anyNamespace && anyPod) || anyAddress ? EVERYONE : JSON.stringify(peer))
    }
  }
  return peers
}

/**
 * The NetworkPolicy isolates the gateway's pods: http from some peers, admin from others only
 * (never everyone, never the peers that reach http — the ingress controller), on ports the
 * container has.
 */
function networkPolicyProblems (policy: K8sObject): string[] {
  const problems = selectorProblems('NetworkPolicy', policy.spec.podSelector, deployment)
  const types = (policy.spec.policyTypes ?? ['Ingress']) as string[]
  if (!types.includes('Ingress')) problems.push('NetworkPolicy: policyTypes without Ingress leaves the pods open')
  for (const rule of (policy.spec.ingress ?? []) as K8sObject[]) {
    for (const p of (rule.ports ?? []) as K8sObject[]) {
      if (p.port !== undefined && resolvePort(container, p.port) === undefined) problems.push(`NetworkPolicy: port ${JSON.stringify(p.port)} is not a port of container ${container.name}`)
    }
  }
  const http = policyPeers(policy, resolvePort(container, 'http') as number)
  const admin = policyPeers(policy, resolvePort(container, 'admin') as number)
  if (http.length === 0) problems.push('NetworkPolicy: nothing may reach port http')
  if (http.includes(EVERYONE)) problems.push('NetworkPolicy: port http is open to every peer')
  if (admin.length === 0) problems.push('NetworkPolicy: nothing may reach port admin (Prometheus)')
  if (admin.includes(EVERYONE)) problems.push('NetworkPolicy: port admin is open to every peer')
  for (const peer of admin.filter(p => p !== EVERYONE && http.includes(p))) problems.push(`NetworkPolicy: port admin is open to ${peer}, a peer of port http`)
  return problems
}

/** pods a rollout may add above the replica count (maxSurge: a number or a percentage, rounded up; default 25%) */
function maxSurgePods (replicas: number): number {
  const surge: number | string = deployment.spec.strategy?.rollingUpdate?.maxSurge ?? '25%'
  return typeof surge === 'number' ? surge : Math.ceil(replicas * Number(surge.replace('%', '')) / 100)
}

/**
 * Whether .dockerignore keeps a path out of the build context, as Docker reads it: `*` within a
 * directory, `**` across any number, a pattern matching a parent directory excludes what is
 * inside, the last matching line wins and `!` lets a path back in.
 */
function dockerignored (lines: string[], path: string): boolean {
  const parts = path.split('/')
  let ignored = false
  for (const line of lines) {
    const pattern = line.replace(/^!/, '')
    const source = pattern.split(/(\*\*\/|\*\*|\*|\?)/).map(part =>
      part === '**/' ? '(?:.*/)?' : part === '**' ? '.*' : part === '*' ? '[^/]*' : part === '?' ? '[^/]' : part.replace(/[.+^${}()|[\]\\]/g, '\\$&')
    ).join('')
    const re = new RegExp(`^${source}$`)
    if (parts.some((_, i) => re.test(parts.slice(0, i + 1).join('/')))) ignored = !line.startsWith('!')
  }
  return ignored
}

t.test('every YAML file parses, and kustomization.yaml lists every manifest', async t => {
  t.ok(set.objects.length >= 8, `${set.objects.length} objects in ${set.files.join(', ')}`)
  t.same([...(set.kustomization.resources as string[])].sort(), set.files, 'resources = the YAML files beside it')
  t.same(set.objects.map(m => m.object.kind).sort(),
    ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'NetworkPolicy', 'PodDisruptionBudget', 'Secret', 'Secret', 'Service'])
})

t.test('every object is valid against the Kubernetes schema of its apiVersion and kind', async t => {
  for (const m of set.objects) {
    t.same(await schemaProblems(m), [], `${m.file}: ${m.object.apiVersion} ${m.object.kind}/${m.object.metadata?.name}`)
  }
})

t.test('probes: readiness GET /readyz, liveness and startup GET /healthz, on the admin port', async t => {
  t.same(probeProblems(deployment, PROBES), [])
})

t.test('ports agree: container, Service, Prometheus annotations and the config', async t => {
  const config = loadPodConfig(t, podEnv())
  t.equal(resolvePort(container, 'admin'), config.admin.port, 'container port admin = admin.port')
  t.equal(resolvePort(container, 'http'), config.server.port, 'container port http = server.port')
  const service = find('Service')
  t.same(serviceProblems(service, deployment), [])
  t.same((service.spec.ports as K8sObject[]).map(p => [p.name, p.port]), [['http', 8080]], 'the Service publishes traffic only')
  t.same(adminServicePorts(service), [], 'no Service port leads to the admin listener (every pod of the cluster could reach it)')
  t.notOk(Object.keys(service.metadata.annotations ?? {}).some(k => k.startsWith('prometheus.io/')), 'Prometheus is not pointed at the Service')
  const annotations = (deployment.spec.template.metadata.annotations ?? {}) as Record<string, string>
  t.equal(annotations['prometheus.io/scrape'], 'true', 'Prometheus scrapes the pods')
  t.equal(annotations['prometheus.io/port'], String(config.admin.port), 'on the admin port')
  t.equal(annotations['prometheus.io/path'], '/metrics')
})

t.test('the NetworkPolicy lets the ingress controller reach http, and only monitoring reach admin', async t => {
  const policy = find('NetworkPolicy')
  t.same(networkPolicyProblems(policy), [])
  const http = policyPeers(policy, resolvePort(container, 'http') as number)
  const admin = policyPeers(policy, resolvePort(container, 'admin') as number)
  t.ok(admin.every(p => !http.includes(p)), `admin: ${admin.join(', ')}; http: ${http.join(', ')}`)
  t.same(((policy.spec.ingress ?? []) as K8sObject[]).flatMap(r => (r.ports ?? []) as K8sObject[]).map(p => resolvePort(container, p.port)).sort(),
    (container.ports as K8sObject[]).map(p => p.containerPort).sort(), 'its ports are the container ports, each once')
  t.same(policy.spec.policyTypes, ['Ingress'], 'egress left open (DNS, PostgreSQL, upstreams, identity providers)')
  // the namespace names are the operator's to fill in: each is marked on its line or in the comment just above
  const lines = readFileSync(join(DIR, 'networkpolicy.yaml'), 'utf8').split('\n')
  const namespaces = ((policy.spec.ingress ?? []) as K8sObject[]).flatMap(r => (r.from ?? []) as K8sObject[])
    .map(peer => peer.namespaceSelector?.matchLabels?.['kubernetes.io/metadata.name']).filter(n => n !== undefined)
  t.same(namespaces, ['ingress-nginx', 'monitoring'])
  for (const ns of namespaces) {
    const at = lines.findIndex(l => l.includes(`kubernetes.io/metadata.name: ${ns}`))
    t.ok(lines.slice(Math.max(0, at - 4), at + 1).some(l => l.includes('EXAMPLE')), `namespace ${ns} is marked EXAMPLE`)
  }
})

t.test('trustProxy: the ingress controller from TRUSTED_PROXY_CIDR; the shipped placeholder is refused', async t => {
  const env = podEnv()
  const config = loadPodConfig(t, env)
  t.same(config.server.trustProxy, [EXAMPLE_POD_CIDR])
  const trust = trustFunction(config.server.trustProxy)
  t.ok(trust('10.244.3.7'), 'an ingress controller pod is trusted: its X-Forwarded-For gives the client address')
  t.notOk(trust('203.0.113.9'), 'no one else is')
  const shipped = (container.env as K8sObject[]).find(e => e.name === 'TRUSTED_PROXY_CIDR')?.value
  t.match(shipped, /REPLACE/, 'the Deployment ships a placeholder')
  t.same(configProblemPaths(() => loadPodConfig(t, { ...env, TRUSTED_PROXY_CIDR: String(shipped) })), ['/server/trustProxy/0'],
    'a pod with the placeholder refuses to start')
  t.same(configProblemPaths(() => loadPodConfig(t, { ...env, TRUSTED_PROXY_CIDR: '' })), ['/server/trustProxy/0'], 'so does one without it')
})

t.test("PostgreSQL connections at the fleet's largest fit max_connections with a reserve", async t => {
  const config = loadPodConfig(t, podEnv())
  const hpa = find('HorizontalPodAutoscaler')
  const workers: unknown = (parse(gatewayYaml) as K8sObject).server.workers ?? 1
  t.type(workers, 'number', "server.workers is a number (auto would follow the node's cores)")
  const pods = hpa.spec.maxReplicas + maxSurgePods(hpa.spec.maxReplicas)
  // each worker: its pool, and one LISTEN connection for the revocation feed
  const peak = pods * Number(workers) * (config.database.poolSize + 1)
  t.ok(peak <= MAX_GATEWAY_CONNECTIONS,
    `(maxReplicas + maxSurge) ${pods} × workers ${Number(workers)} × (poolSize ${config.database.poolSize} + 1) = ${peak} ≤ ${MAX_GATEWAY_CONNECTIONS}`)
})

t.test("the ConfigMap's gateway.yaml passes the gateway's loader with the pod's environment and mounts", async t => {
  const env = podEnv()
  const config = loadPodConfig(t, env)
  t.equal(config.server.host, '0.0.0.0')
  t.equal(config.admin.host, '0.0.0.0', 'the kubelet probes the pod IP')
  t.equal(config.database.url, env.DATABASE_URL, 'PostgreSQL from the environment, not the embedded store')
  t.equal(config.admin.token, env.ADMIN_TOKEN)
  t.same(configProblemPaths(() => loadPodConfig(t, { ...env, DATABASE_URL: '' })), ['/database/url'],
    'without DATABASE_URL the config is refused (replicas must not fall back to the embedded store)')

  // the TLS parameters secret.yaml recommends: they load with the CA mounted, and stop the pod without it
  const tls = /\?sslmode=verify-full&sslrootcert=(\S+)/.exec(readFileSync(join(DIR, 'secret.yaml'), 'utf8'))
  t.ok(tls, 'secret.yaml recommends sslmode=verify-full with a CA file')
  const caDir = mkdtempSync(join(tmpdir(), 'portcullis-pg-ca-'))
  t.teardown(() => rmSync(caDir, { recursive: true, force: true }))
  writeFileSync(join(caDir, 'ca.crt'), 'EXAMPLE CA')
  const withCa = (file: string): Record<string, string> => ({ ...env, DATABASE_URL: env.DATABASE_URL + (tls?.[0] ?? '').replace(tls?.[1] ?? '', file) })
  t.same(configProblemPaths(() => loadPodConfig(t, withCa(join(caDir, 'ca.crt')))), [], 'with the CA mounted')
  t.same(configProblemPaths(() => loadPodConfig(t, withCa(join(caDir, 'absent.crt')))), ['/database/url'], 'without it')

  const configMount = mountAt(CONFIG_PATH)
  t.equal(configMount?.subPath, 'gateway.yaml')
  t.equal(volume(configMount?.name)?.configMap?.name, configMap.metadata.name)

  // every key file the config names, resolved as the gateway resolves it, is in the keys Secret
  for (const k of (parse(gatewayYaml) as K8sObject).tokens.keys as K8sObject[]) {
    const file = posix.resolve(posix.dirname(CONFIG_PATH), k.privateKeyFile)
    const mount = mountAt(posix.dirname(file))
    t.ok(mount?.readOnly, `${file}: on a read-only mount`)
    const secretName = volume(mount?.name)?.secret?.secretName
    t.ok(posix.basename(file) in secretValues(find('Secret', secretName)), `${file}: in Secret ${secretName}`)
  }
  const vars = container.env as K8sObject[]
  t.same(vars.filter(e => e.valueFrom === undefined).map(e => e.name), ['TRUSTED_PROXY_CIDR'], 'no other variable is written into the Deployment')
  for (const e of vars.filter(e => e.valueFrom !== undefined)) {
    const ref = e.valueFrom?.secretKeyRef
    t.ok(ref !== undefined && ref.key in secretValues(find('Secret', ref.name)), `${e.name} from Secret ${ref?.name}`)
  }
})

t.test('terminationGracePeriodSeconds exceeds the preStop sleep plus server.shutdownTimeout', async t => {
  const config = loadPodConfig(t, podEnv())
  const command = container.lifecycle.preStop.exec.command as string[]
  t.equal(command[0], 'sleep')
  const preStopMs = Number(command[1]) * 1000
  t.ok(preStopMs >= 5000, 'long enough for endpoints to drop the pod')
  t.ok(podSpec.terminationGracePeriodSeconds * 1000 > preStopMs + config.server.shutdownTimeoutMs,
    `${podSpec.terminationGracePeriodSeconds} s > ${preStopMs / 1000} s + ${config.server.shutdownTimeoutMs / 1000} s`)
})

t.test('the pod runs as non-root with a read-only root filesystem and a writable /tmp', async t => {
  t.equal(podSpec.securityContext.runAsNonRoot, true)
  t.not(podSpec.securityContext.runAsUser, 0)
  t.equal(container.securityContext.readOnlyRootFilesystem, true)
  t.equal(container.securityContext.allowPrivilegeEscalation, false)
  t.same(container.securityContext.capabilities.drop, ['ALL'])
  t.ok(volume(mountAt('/tmp')?.name)?.emptyDir !== undefined, '/tmp is an emptyDir')
  t.ok(container.resources.requests.cpu !== undefined, 'a CPU request (the HPA measures against it)')
  t.ok(container.resources.limits.memory !== undefined)
})

t.test('Service, PodDisruptionBudget and HPA go with the Deployment', async t => {
  const hpa = find('HorizontalPodAutoscaler')
  const pdb = find('PodDisruptionBudget')
  t.same(selectorProblems('Deployment', deployment.spec.selector, deployment), [])
  t.same(selectorProblems('PodDisruptionBudget', pdb.spec.selector, deployment), [])
  t.same(scaleTargetProblems(hpa, deployment), [])
  t.ok(deployment.spec.replicas >= 2)
  t.equal(hpa.spec.minReplicas, deployment.spec.replicas, 'replicas = the HPA minimum')
  t.equal(pdb.spec.maxUnavailable, 1, 'one pod at a time, at any scale')
  t.equal(pdb.spec.minAvailable, undefined, 'not minAvailable: 1, which at 10 replicas let a drain evict 9 at once')
  t.ok(pdb.spec.maxUnavailable < hpa.spec.minReplicas, 'a node drain can proceed and leaves a pod serving')
  t.equal(hpa.spec.metrics[0].resource.name, 'cpu')
})

t.test('.dockerignore keeps secrets out of the build context, and not the source', async t => {
  const lines = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map(l => l.trim()).filter(l => l !== '' && !l.startsWith('#'))
  const secrets = [
    '.git/config', '.env', '.env.production', 'config/.env.local', '.npmrc', 'src/.npmrc', 'config/keys/k1.pem',
    'tls/server.key', 'tls/server.pem', 'db.secret', 'certs/client.p12', 'client.pfx', 'id_rsa', '.ssh/id_ed25519.pub',
  ]
  for (const path of secrets) t.ok(dockerignored(lines, path), `${path}: not in the build context`)
  const needed = ['package.json', 'package-lock.json', 'tsconfig.json', 'tsconfig.build.json', 'tsconfig.client.json', 'config/keys/README.md',
    ...['src', 'plugins', 'config'].flatMap(dir => (readdirSync(join(REPO, dir), { recursive: true }) as string[])
      .map(f => `${dir}/${f.split('\\').join('/')}`).filter(f => !f.startsWith('config/keys/')))]
  t.same(needed.filter(path => dockerignored(lines, path)), [], `the ${needed.length} files the build needs are in the build context`)
})

t.test('the Secrets hold marked example values, and the example key fails closed', async t => {
  for (const secret of set.objects.filter(m => m.object.kind === 'Secret').map(m => m.object)) {
    for (const [k, v] of Object.entries(secretValues(secret))) {
      t.ok(v === '' || /EXAMPLE/.test(v), `${secret.metadata.name}.${k} is empty or marked EXAMPLE`)
    }
  }
  const exampleKey = secretValues(find('Secret', 'portcullis-keys'))['k1.pem']
  t.same(configProblemPaths(() => loadPodConfig(t, podEnv(), exampleKey)), ['/tokens/keys/0/privateKeyFile'],
    'a pod with the example key refuses to start')
})

t.test('a broken manifest fails validation', async t => {
  const broken = (mutate: (d: K8sObject) => void): K8sObject => {
    const copy = structuredClone(deployment)
    mutate(copy)
    return copy
  }
  const asManifest = (object: K8sObject): Manifest => ({ file: 'deployment.yaml', object })
  const schemaCases: Array<[string, (d: K8sObject) => void]> = [
    ['a container without its required name', d => { delete d.spec.template.spec.containers[0].name }],
    ['no selector', d => { delete d.spec.selector }],
    ['replicas as a string', d => { d.spec.replicas = '2' }],
    ['a port number out of type', d => { d.spec.template.spec.containers[0].ports[1].containerPort = 'nine' }],
  ]
  for (const [name, mutate] of schemaCases) {
    const problems = await schemaProblems(asManifest(broken(mutate)))
    t.equal(problems.length, 1, `schema: ${name} → ${problems[0] ?? 'accepted'}`)
  }
  t.match(await schemaProblems({ file: 'x.yaml', object: { apiVersion: 'apps/v9', kind: 'Deployment' } }), [/no Kubernetes schema/])

  const probeCases: Array<[string, (d: K8sObject) => void]> = [
    ['a probe port name no container port has', d => { d.spec.template.spec.containers[0].readinessProbe.httpGet.port = 'admn' }],
    ['a probe on the traffic port', d => { d.spec.template.spec.containers[0].livenessProbe.httpGet.port = 'http' }],
    ['a probe port number no container port has', d => { d.spec.template.spec.containers[0].startupProbe.httpGet.port = 9091 }],
    ['readiness on /healthz', d => { d.spec.template.spec.containers[0].readinessProbe.httpGet.path = '/healthz' }],
    ['no readiness probe', d => { delete d.spec.template.spec.containers[0].readinessProbe }],
  ]
  for (const [name, mutate] of probeCases) {
    const problems = probeProblems(broken(mutate), PROBES)
    t.equal(problems.length, 1, `probes: ${name} → ${problems[0] ?? 'accepted'}`)
  }

  const service = structuredClone(find('Service'))
  service.spec.ports[0].targetPort = 'htp'
  t.equal(serviceProblems(service, deployment).length, 1, 'a Service targetPort the container does not have')
  for (const targetPort of ['admin', 9090]) {
    const published = structuredClone(find('Service'))
    published.spec.ports.push({ name: 'metrics', port: 9090, targetPort })
    t.equal(adminServicePorts(published).length, 1, `a Service port to the admin listener (targetPort ${targetPort})`)
  }

  const policy = find('NetworkPolicy')
  const policyCases: Array<[string, (p: K8sObject) => void]> = [
    ['a rule for every port (the ingress controller reaches admin)', p => { delete p.spec.ingress[0].ports }],
    ['admin open to every peer', p => { p.spec.ingress[1].from = [] }],
    ['admin open to every namespace', p => { p.spec.ingress[1].from = [{ namespaceSelector: {} }] }],
    ['http open to every address', p => { p.spec.ingress[0].from = [{ ipBlock: { cidr: '0.0.0.0/0' } }] }],
    ['a port the container does not have (nothing may reach admin)', p => { p.spec.ingress[1].ports[0].port = 9091 }],
    ['a policy for other pods', p => { p.spec.podSelector = { matchLabels: { app: 'other' } } }],
  ]
  for (const [name, mutate] of policyCases) {
    const copy = structuredClone(policy)
    mutate(copy)
    t.ok(networkPolicyProblems(copy).length >= 1, `NetworkPolicy: ${name} → ${networkPolicyProblems(copy).join('; ') || 'accepted'}`)
  }
  const hpa = structuredClone(find('HorizontalPodAutoscaler'))
  hpa.spec.scaleTargetRef.name = 'portcullis-old'
  t.equal(scaleTargetProblems(hpa, deployment).length, 1, 'an HPA aimed at another Deployment')
  t.equal(selectorProblems('PodDisruptionBudget', { matchLabels: { app: 'other' } }, deployment).length, 1, 'a PDB selecting other pods')
})
