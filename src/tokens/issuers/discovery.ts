import { IssuerKeysError, IssuerKeysErrorCode } from './errors.js'
import { fetchJson, remoteUrlProblem, type FetchLimits } from './fetch.js'

export interface Discovered {
  jwksUri: URL
  /** Cache-Control freshness of the discovery document, seconds */
  maxAgeSec: number | undefined
}

/**
 * OIDC Discovery 1.0 §4: the configuration lives at the issuer + `/.well-known/openid-configuration`
 * (a trailing slash of the issuer is removed first, so a path-bearing issuer keeps its path).
 */
export function discoveryUrl (issuer: string): URL {
  return new URL(issuer.replace(/\/+$/, '') + '/.well-known/openid-configuration')
}

/**
 * Fetches the provider configuration and returns its `jwks_uri`. The document's `issuer` MUST
 * be identical to the configured one (OIDC Discovery 1.0 §4.3): otherwise a document served
 * at someone else's well-known path — a multi-tenant host, a misrouted proxy — would choose
 * the keys we trust. `jwks_uri` need not share the issuer's origin (Google's does not), but
 * it must pass the same https rule as every configured URL.
 */
export async function discover (issuer: string, limits: FetchLimits, allowInsecureHttp: boolean): Promise<Discovered> {
  const url = discoveryUrl(issuer)
  const { body, maxAgeSec } = await fetchJson(url, limits)
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new IssuerKeysError(IssuerKeysErrorCode.invalidDiscovery, `${url.href} is not a JSON object`)
  }
  const doc = body as { issuer?: unknown, jwks_uri?: unknown }
  if (doc.issuer !== issuer) {
    throw new IssuerKeysError(IssuerKeysErrorCode.issuerMismatch,
      `${url.href} names issuer ${JSON.stringify(String(doc.issuer).slice(0, 200))}, not the configured ${JSON.stringify(issuer)}`)
  }
  if (typeof doc.jwks_uri !== 'string' || !URL.canParse(doc.jwks_uri)) {
    throw new IssuerKeysError(IssuerKeysErrorCode.invalidDiscovery, `${url.href} has no jwks_uri that is a URL`)
  }
  const problem = remoteUrlProblem(doc.jwks_uri, allowInsecureHttp)
  if (problem !== undefined) {
    throw new IssuerKeysError(IssuerKeysErrorCode.insecureUrl, `jwks_uri ${JSON.stringify(doc.jwks_uri.slice(0, 200))} from ${url.href}: ${problem}`)
  }
  return { jwksUri: new URL(doc.jwks_uri), maxAgeSec }
}
