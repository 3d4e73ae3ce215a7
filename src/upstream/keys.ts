import { Agent, type Dispatcher } from 'undici'
import { parseJwks, type RemoteKey } from '../tokens/issuers/jwks.js'
import type { RemoteAlgorithm } from '../tokens/issuers/algorithms.js'
import { RemoteKeySet, type RemoteKeySetStatus } from '../tokens/issuers/remote-key-set.js'
import { REMOTE_KEY_SET_DEFAULTS, type KeySetLogger } from '../tokens/issuers/options.js'
import type { ResolvedUpstreamOptions } from './options.js'

/**
 * Where the kit's verification keys come from: the gateway's JWKS, fetched and cached by the
 * same RemoteKeySet the gateway uses for identity providers (bounded fetches, no redirects,
 * Cache-Control, background refresh, single-flight unknown-kid refetch with a cooldown,
 * stale-if-error), or a JWKS document given in the options. Never a URL from the assertion.
 */
export interface AssertionKeys {
  /** hot path, no I/O: the key for `kid` and a pinned `alg` */
  key: (kid: string | undefined, alg: string) => RemoteKey | undefined
  /** any key at all (false before the first fetch, or past the stale-if-error bound) */
  readonly available: boolean
  /** an unknown kid: refetch (single flight, cooldown); true when the kid is known afterwards */
  refetch: (kid: string) => Promise<boolean>
  /** resolves once the first fetch has settled, or after `waitMs`; never rejects */
  settled: (waitMs: number) => Promise<void>
  /** for health checks; undefined for a static JWKS */
  readonly status: RemoteKeySetStatus | undefined
  close: () => Promise<void>
}

/** a JWKS given in the options: parsed once, nothing fetched */
export function staticKeys (doc: { keys: unknown[] }, algorithms: readonly RemoteAlgorithm[]): AssertionKeys {
  const { keys } = parseJwks(doc, algorithms, REMOTE_KEY_SET_DEFAULTS.maxKeys)
  const byKid = new Map<string, RemoteKey>()
  for (const k of keys) if (k.kid !== undefined) byKid.set(k.kid, k)
  return {
    key: (kid, alg) => {
      const k = kid === undefined ? (keys.length === 1 ? keys[0] : undefined) : byKid.get(kid)
      return k !== undefined && k.algorithms.includes(alg as RemoteAlgorithm) ? k : undefined
    },
    available: true,
    refetch: async () => false,
    settled: async () => {},
    status: undefined,
    close: async () => {},
  }
}

/** the gateway's JWKS at `o.jwksUrl`, fetched now and kept fresh */
export function remoteKeys (o: ResolvedUpstreamOptions, logger: KeySetLogger, dispatcher: Dispatcher | undefined): AssertionKeys {
  const own = dispatcher === undefined ? new Agent({ connections: 2, keepAliveTimeout: 4_000, connect: { timeout: o.fetchTimeoutMs } }) : undefined
  const set = new RemoteKeySet({
    name: 'portcullis',
    issuer: o.issuer,
    discovery: false,
    jwksUri: o.jwksUrl,
    algorithms: o.algorithms,
    fetchTimeoutMs: o.fetchTimeoutMs,
    maxResponseBytes: REMOTE_KEY_SET_DEFAULTS.maxResponseBytes,
    minRefreshIntervalMs: o.minRefreshIntervalMs,
    maxRefreshIntervalMs: o.maxRefreshIntervalMs,
    defaultRefreshIntervalMs: o.refreshIntervalMs,
    cooldownMs: o.cooldownMs,
    staleIfErrorMs: o.staleIfErrorMs,
    maxKeys: REMOTE_KEY_SET_DEFAULTS.maxKeys,
    allowInsecureHttp: o.allowInsecureHttp,
    logger,
    dispatcher: dispatcher ?? own,
  })
  set.start()
  return {
    key: (kid, alg) => set.remoteKey(kid, alg),
    get available () { return set.status.keys > 0 },
    refetch: (kid) => set.refetchForUnknownKid(kid),
    settled: async (waitMs) => {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([set.whenSettled(), new Promise<void>(resolve => { timer = setTimeout(resolve, waitMs) })])
      clearTimeout(timer)
    },
    get status () { return set.status },
    close: async () => {
      set.close()
      await own?.close()
    },
  }
}
