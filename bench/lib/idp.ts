/**
 * A stand-in identity provider for the `portcullis-external-*` configurations: an OpenID
 * discovery document and a JWKS on 127.0.0.1, served from the runner process (it is asked
 * once per gateway start, never on the request path), and the RS256 key its access tokens
 * are signed with. Tokens are minted like our own (bench/lib/tokens.ts) with its issuer,
 * audience and kid, so the gateway picks the issuer by `iss` and the key from this JWKS.
 */
import { createPublicKey } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import { createServer, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { join } from 'node:path'
import { makeKeys, type KeyMaterial } from './tokens.js'

export const IDP_AUDIENCE = 'https://api.bench.test'
export const IDP_KID = 'idp-1'

export interface BenchIdp {
  /** http://127.0.0.1:PORT — the issuer identifier and where discovery is served */
  issuer: string
  audience: string
  kid: string
  keys: KeyMaterial
  /** requests by path since start */
  hits: Map<string, number>
  close: () => Promise<void>
}

export async function startBenchIdp (dir: string): Promise<BenchIdp> {
  const keysDir = join(dir, 'idp-keys')
  mkdirSync(keysDir, { recursive: true })
  const keys = makeKeys('RS256', keysDir)
  const jwk = { ...createPublicKey(keys.verifyKey).export({ format: 'jwk' }), kid: IDP_KID, alg: 'RS256', use: 'sig' }
  const hits = new Map<string, number>()
  let issuer = ''
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? ''
    hits.set(path, (hits.get(path) ?? 0) + 1)
    if (path === '/.well-known/openid-configuration') {
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ issuer, jwks_uri: `${issuer}/jwks` }))
    } else if (path === '/jwks') {
      res.writeHead(200, { 'content-type': 'application/jwk-set+json', 'cache-control': 'max-age=600' }).end(JSON.stringify({ keys: [jwk] }))
    } else {
      res.writeHead(404).end()
    }
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  issuer = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    issuer,
    audience: IDP_AUDIENCE,
    kid: IDP_KID,
    keys,
    hits,
    close: () => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }),
  }
}
