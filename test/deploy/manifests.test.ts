import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, posix } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { ConfigError } from '../../src/errors.js'
import { makeKey } from '../fixtures/keys.js'
import {
  containerOf, loadManifests, probeProblems, resolvePort, scaleTargetProblems, schemaProblems, selectorProblems,
  serviceProblems, type K8sObject, type Manifest,
} from './k8s-checks.js'

// deploy/kubernetes, checked offline: every object against the Kubernetes schema of its
// apiVersion/kind, the facts that tie the objects together, and the ConfigMap's gateway.yaml
// against the gateway's own loader, as the pod would load it.

const DIR = fileURLToPath(new URL('../../deploy/kubernetes/', import.meta.url))
const CONFIG_PATH = '/etc/portcullis/gateway.yaml' // where the Deployment mounts the ConfigMap's file
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
    if (err instanceof ConfigError) return err.problems.map(p => p.path)
    throw err
  }
}

t.test('every YAML file parses, and kustomization.yaml lists every manifest', async t => {
  t.ok(set.objects.length >= 7, `${set.objects.length} objects in ${set.files.join(', ')}`)
  t.same([...(set.kustomization.resources as string[])].sort(), set.files, 'resources = the YAML files beside it')
  t.same(set.objects.map(m => m.object.kind).sort(),
    ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'PodDisruptionBudget', 'Secret', 'Secret', 'Service'])
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
  const servicePort = (name: string): K8sObject | undefined => (service.spec.ports as K8sObject[]).find(p => p.name === name)
  t.equal(servicePort('http')?.port, 8080)
  t.equal(servicePort('admin')?.port, 9090)
  t.equal(service.metadata.annotations['prometheus.io/scrape'], 'true')
  t.equal(service.metadata.annotations['prometheus.io/port'], String(servicePort('admin')?.port), 'Prometheus scrapes the admin port')
  t.equal(service.metadata.annotations['prometheus.io/path'], '/metrics')
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
  for (const e of container.env as K8sObject[]) {
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
  t.equal(pdb.spec.minAvailable, 1)
  t.ok(pdb.spec.minAvailable < hpa.spec.minReplicas, 'a node drain can proceed')
  t.equal(hpa.spec.metrics[0].resource.name, 'cpu')
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
  service.spec.ports[1].targetPort = 'admn'
  t.equal(serviceProblems(service, deployment).length, 1, 'a Service targetPort the container does not have')
  const hpa = structuredClone(find('HorizontalPodAutoscaler'))
  hpa.spec.scaleTargetRef.name = 'portcullis-old'
  t.equal(scaleTargetProblems(hpa, deployment).length, 1, 'an HPA aimed at another Deployment')
  t.equal(selectorProblems('PodDisruptionBudget', { matchLabels: { app: 'other' } }, deployment).length, 1, 'a PDB selecting other pods')
})
