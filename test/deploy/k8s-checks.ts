import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseAllDocuments } from 'yaml'

/**
 * Offline checks of the Kubernetes manifests: the upstream schema of each object's
 * apiVersion/kind (through kubernetes-models, which ships the Kubernetes OpenAPI schemas
 * compiled to validators), and the cross-object facts no schema holds (a probe names a port
 * the container has, a Service selects the Deployment's pods, …). Each check returns its
 * problems as `file: message` strings; [] means fine.
 */

export type K8sObject = Record<string, any> // checked by schemaProblems before anything relies on a field

export interface Manifest { file: string, object: K8sObject }

export interface ManifestSet {
  /** every Kubernetes object, from every YAML file but kustomization.yaml */
  objects: Manifest[]
  kustomization: K8sObject
  /** YAML files other than kustomization.yaml */
  files: string[]
}

export function loadManifests (dir: string): ManifestSet {
  const files = readdirSync(dir).filter(f => /\.ya?ml$/.test(f)).sort()
  const objects: Manifest[] = []
  let kustomization: K8sObject | undefined
  for (const file of files) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'), { uniqueKeys: true })) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors.map(e => e.message).join('; ')}`)
      const object = doc.toJS() as K8sObject | null
      if (object === null) continue // an empty document (a trailing ---)
      if (file === 'kustomization.yaml') kustomization = object
      else objects.push({ file, object })
    }
  }
  if (kustomization === undefined) throw new Error(`${dir}: no kustomization.yaml`)
  return { objects, kustomization, files: files.filter(f => f !== 'kustomization.yaml') }
}

interface Model { validate: () => void }
type ModelClass = new (data: unknown) => Model

/** `apps/v1` → kubernetes-models/apps/v1, `v1` (the core group) → kubernetes-models/v1 */
async function modelFor (apiVersion: unknown, kind: unknown): Promise<ModelClass | undefined> {
  if (typeof apiVersion !== 'string' || typeof kind !== 'string' || !/^([a-z0-9.-]+\/)?v[0-9a-z]+$/.test(apiVersion)) return undefined
  try {
    const mod = await import(`kubernetes-models/${apiVersion}`) as Record<string, unknown>
    return typeof mod[kind] === 'function' ? mod[kind] as ModelClass : undefined
  } catch {
    return undefined
  }
}

/** Problems of one object against the Kubernetes schema of its apiVersion/kind (types, required fields, formats). */
export async function schemaProblems (m: Manifest): Promise<string[]> {
  const { apiVersion, kind } = m.object
  const Model = await modelFor(apiVersion, kind)
  if (Model === undefined) return [`${m.file}: no Kubernetes schema for apiVersion ${String(apiVersion)}, kind ${String(kind)}`]
  try {
    new Model(m.object).validate()
    return []
  } catch (err) {
    return [`${m.file}: ${kind}/${m.object.metadata?.name}: ${(err as Error).message}`]
  }
}

export function containerOf (deployment: K8sObject): K8sObject {
  return deployment.spec.template.spec.containers[0]
}

/** the containerPort a probe's or Service's port (name or number) designates, if the container has it */
export function resolvePort (container: K8sObject, port: unknown): number | undefined {
  const ports = (container.ports ?? []) as Array<{ name?: string, containerPort: number }>
  const found = typeof port === 'string' ? ports.find(p => p.name === port) : ports.find(p => p.containerPort === port)
  return found?.containerPort
}

/** Each probe of the first container is an HTTP GET of `path` on the container port named `portName`. */
export function probeProblems (deployment: K8sObject, want: Record<string, { path: string, portName: string }>): string[] {
  const container = containerOf(deployment)
  const problems: string[] = []
  for (const [probe, { path, portName }] of Object.entries(want)) {
    const get = container[probe]?.httpGet
    if (get === undefined) { problems.push(`${probe}: missing or not an httpGet probe`); continue }
    if (get.path !== path) problems.push(`${probe}: path ${get.path}, expected ${path}`)
    const port = resolvePort(container, get.port)
    if (port === undefined) problems.push(`${probe}: port ${JSON.stringify(get.port)} is not a port of container ${container.name}`)
    else if (port !== resolvePort(container, portName)) problems.push(`${probe}: port ${JSON.stringify(get.port)} is not the ${portName} port`)
  }
  return problems
}

/** The Service selects the Deployment's pods and each of its ports targets a port the container has. */
export function serviceProblems (service: K8sObject, deployment: K8sObject): string[] {
  const problems = selectorProblems('Service', service.spec.selector, deployment)
  const container = containerOf(deployment)
  for (const p of service.spec.ports as K8sObject[]) {
    if (resolvePort(container, p.targetPort ?? p.port) === undefined) {
      problems.push(`Service port ${p.name}: targetPort ${JSON.stringify(p.targetPort)} is not a port of container ${container.name}`)
    }
  }
  return problems
}

/** a selector (matchLabels or a plain map) that matches the pod template's labels */
export function selectorProblems (what: string, selector: K8sObject | undefined, deployment: K8sObject): string[] {
  const labels = (deployment.spec.template.metadata?.labels ?? {}) as Record<string, string>
  const wanted = (selector?.matchLabels ?? selector ?? {}) as Record<string, string>
  if (Object.keys(wanted).length === 0) return [`${what}: empty selector (it would select every pod)`]
  return Object.entries(wanted).filter(([k, v]) => labels[k] !== v).map(([k, v]) => `${what}: selector ${k}=${v} does not match the pod template`)
}

/** The HPA scales this Deployment. */
export function scaleTargetProblems (hpa: K8sObject, deployment: K8sObject): string[] {
  const ref = hpa.spec.scaleTargetRef
  return ref.apiVersion === deployment.apiVersion && ref.kind === deployment.kind && ref.name === deployment.metadata.name
    ? []
    : [`HorizontalPodAutoscaler: scaleTargetRef ${ref.apiVersion} ${ref.kind}/${ref.name} is not ${deployment.kind}/${deployment.metadata.name}`]
}
