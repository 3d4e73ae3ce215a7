import { createPrivateKey, createPublicKey, randomUUID } from 'node:crypto'
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { Pool, request } from 'undici'
import { baseConfig, raw, signWith, startGateway, type RawResponse, type StartedGateway } from '../fixtures/gateway.js'
import type { TestKey } from '../fixtures/keys.js'
import { IDP_CLIENT_ID, IDP_RESOURCE, startIdp, type StartIdpOptions, type TestIdp } from '../fixtures/idp.js'
import { startUpstream, type RecordingUpstream } from '../fixtures/upstream.js'

/**
 * Helpers shared by the identity-in / identity-out end-to-end tests (test/e2e/issuers-*,
 * identity-*, assertion-*) and the upstream kit's tests. They live here because test/upstream/
 * is the one test directory those tests own.
 */

/** the issuer name the e2e configurations give the fixture IdP */
export const IDP_NAME = 'corp'

/** an `issuers:` entry for the fixture IdP, with key-cache intervals short enough for tests */
export function idpIssuer (idp: TestIdp, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  const { jwks, ...rest } = overrides as { jwks?: Record<string, unknown> }
  return {
    name: IDP_NAME,
    issuer: idp.issuer,
    discovery: true,
    audiences: [IDP_RESOURCE],
    algorithms: [idp.currentKey.alg],
    ...rest,
    jwks: { minRefreshInterval: '1s', cooldown: '1s', refreshInterval: '1h', maxRefreshInterval: '1h', fetchTimeout: '2s', ...jwks },
  }
}

export interface IdpGateway {
  idp: TestIdp
  upstream: RecordingUpstream
  gw: StartedGateway
}

/**
 * A real identity provider, a recording upstream, and a gateway signing with `key` whose one
 * route (`api`, /api, auth required) trusts the provider — `issuer` overrides its `issuers:`
 * entry (idpIssuer) — with the provider's keys fetched. All closed in teardown.
 */
export async function startIdpGateway (t: { teardown: (fn: () => unknown) => void, ok: (v: unknown, m: string) => unknown }, key: TestKey, opts: { idp?: StartIdpOptions, issuer?: Record<string, unknown> } = {}): Promise<IdpGateway> {
  const idp = await startIdp(opts.idp)
  t.teardown(() => idp.close())
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, {
    ...baseConfig(key, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }]),
    issuers: [idpIssuer(idp, opts.issuer)],
  })
  t.ok(await waitFor(() => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready'), "the provider's keys are fetched at start")
  return { idp, upstream, gw }
}

/** the IdP's current signing key as a TestKey, so tests can sign token shapes oidc-provider cannot produce */
export function idpKey (idp: TestIdp): TestKey {
  const k = idp.currentKey
  const privateKey = createPrivateKey({ key: k.jwk, format: 'jwk' })
  const publicKey = createPublicKey(privateKey)
  return {
    alg: k.alg,
    kid: k.kid,
    privatePem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
    publicPem: publicKey.export({ type: 'spki', format: 'pem' }).toString(),
    privateKey,
    publicKey,
  }
}

/** claims shaped like the fixture IdP's client-credentials access tokens */
export function idpClaims (idp: TestIdp, overrides: Record<string, unknown> = {}, nowSec = Math.floor(Date.now() / 1000)): Record<string, unknown> {
  return {
    iss: idp.issuer,
    aud: IDP_RESOURCE,
    sub: IDP_CLIENT_ID,
    client_id: IDP_CLIENT_ID,
    jti: randomUUID(),
    iat: nowSec,
    exp: nowSec + 300,
    scope: 'orders:read',
    ...overrides,
  }
}

/** a token signed with the IdP's own current key (header defaults: alg, typ at+jwt, kid) */
export function signAsIdp (idp: TestIdp, overrides: Record<string, unknown> = {}, header: Record<string, unknown> = {}, nowSec?: number): string {
  return signWith(idpKey(idp), idpClaims(idp, overrides, nowSec), header)
}

export interface Decoded { header: Record<string, any>, payload: Record<string, any> }

export function decodeJwt (token: string): Decoded {
  const [h, p] = token.split('.')
  return {
    header: JSON.parse(Buffer.from(h ?? '', 'base64url').toString('utf8')) as Record<string, any>,
    payload: JSON.parse(Buffer.from(p ?? '', 'base64url').toString('utf8')) as Record<string, any>,
  }
}

/** GET with a bearer token (a fresh connection each time, so nothing is shared between requests) */
export function getWith (base: string, path: string, token: string | undefined, headers: Array<[string, string]> = []): Promise<RawResponse> {
  const list: Array<[string, string]> = [...headers]
  if (token !== undefined) list.push(['authorization', `Bearer ${token}`])
  return raw(base, path, { headers: list })
}

/** polls `check` until it answers true, at most `timeoutMs`; answers the last result */
export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 5_000, everyMs = 50): Promise<boolean> {
  const until = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() >= until) return false
    await new Promise(resolve => setTimeout(resolve, everyMs))
  }
}

/**
 * A listener the gateway must never contact (the target of `jku`, `x5u`…): it counts TCP
 * connections, not just HTTP requests, so even a connect that never sends a byte shows.
 */
export interface Tripwire { url: string, connections: () => number, close: () => Promise<void> }

export async function startTripwire (): Promise<Tripwire> {
  let connections = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((_req, res) => { res.writeHead(200, { 'content-type': 'application/json' }).end('{"keys":[]}') })
  server.on('connection', (s) => { connections++; sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}`,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    },
  }
}

/** many requests over a keep-alive pool, `concurrency` at a time; answers the status of each */
export async function flood (base: string, path: string, tokens: readonly string[], concurrency = 50): Promise<Array<{ status: number, code: string | undefined }>> {
  const pool = new Pool(base, { connections: concurrency })
  const out: Array<{ status: number, code: string | undefined }> = new Array(tokens.length)
  let next = 0
  async function worker (): Promise<void> {
    while (next < tokens.length) {
      const i = next++
      const res = await request(`${base}${path}`, { dispatcher: pool, headers: { authorization: `Bearer ${tokens[i]!}` } })
      const text = await res.body.text()
      let code: string | undefined
      try { code = (JSON.parse(text) as { code?: string }).code } catch { code = undefined }
      out[i] = { status: res.statusCode, code }
    }
  }
  try {
    await Promise.all(Array.from({ length: concurrency }, worker))
  } finally {
    await pool.close()
  }
  return out
}
