import { durationMs, durationSec } from '../duration.js'
import { SELF_ISSUER, type IssuerAlgorithm, type IssuerConfig } from '../types.js'
import { problem, type CheckContext, type Raw } from './context.js'
import { isLoopback } from '../../tokens/issuers/fetch.js'
import { MAX_CLOCK_SKEW_SEC } from './tokens.js'

/**
 * `issuers:` — identity providers whose access tokens the gateway trusts besides its own.
 * The issuer of a token is chosen by its exact `iss` among these; where keys come from is
 * configuration only (never a URL in the token).
 */

const MAX_EXTERNAL_LIFETIME_SEC = 7 * 86_400

export function checkIssuers (list: Raw[], selfIssuer: string, ctx: CheckContext): IssuerConfig[] {
  const names = new Map<string, number>()
  const issuers = new Map<string, number>()
  return list.map((i, n) => {
    const path = `/issuers/${n}`
    if (i.name === SELF_ISSUER) problem(ctx, `${path}/name`, `"${SELF_ISSUER}" names the gateway's own tokens (tokens:)`)
    if (names.has(i.name)) problem(ctx, `${path}/name`, `duplicate issuer name "${i.name}" (also /issuers/${names.get(i.name)})`)
    names.set(i.name, n)
    if (issuers.has(i.issuer)) problem(ctx, `${path}/issuer`, `the same issuer is configured twice (also /issuers/${issuers.get(i.issuer)})`)
    issuers.set(i.issuer, n)
    if (i.issuer === selfIssuer) problem(ctx, `${path}/issuer`, 'is tokens.issuer: the gateway\'s own tokens are verified with tokens.keys')
    if (i.discovery === true && i.jwksUri !== undefined) problem(ctx, path, 'give discovery: true or jwksUri, not both')
    if (i.discovery !== true && i.jwksUri === undefined) problem(ctx, path, 'needs discovery: true or a jwksUri (where its keys are published)')
    let insecure = false
    const urls: Array<[string, string]> = [[`${path}/issuer`, i.issuer]]
    if (i.jwksUri !== undefined) urls.push([`${path}/jwksUri`, i.jwksUri])
    for (const [p, value] of urls) {
      if (p.endsWith('/issuer') && i.discovery !== true) continue // a plain identifier then, not fetched
      let url: URL
      try {
        url = new URL(value)
      } catch {
        problem(ctx, p, 'must be an https:// URL')
        continue
      }
      // the key set's own test: `http://127.evil.example` is a DNS name, not loopback, and the
      // check once passed what the key set then refused at start (fix-idp-loopback-mismatch)
      if (url.protocol === 'http:' && isLoopback(url.hostname)) insecure = true
      else if (url.protocol !== 'https:') problem(ctx, p, 'must be an https:// URL (plain http only on loopback)')
      if (url.username !== '' || url.password !== '') problem(ctx, p, 'must not carry credentials')
      // an issuer identifier has none (RFC 8414 §2); discovery appends its path to it
      if (p.endsWith('/issuer') && (url.search !== '' || url.hash !== '' || value.includes('#') || value.includes('?'))) problem(ctx, p, 'must not have a query or fragment')
    }
    const clockSkewSec = durationSec(i.clockSkew)
    if (clockSkewSec > MAX_CLOCK_SKEW_SEC) problem(ctx, `${path}/clockSkew`, 'must be at most 5m')
    const maxTokenLifetimeSec = durationSec(i.maxTokenLifetime)
    if (maxTokenLifetimeSec < 60 || maxTokenLifetimeSec > MAX_EXTERNAL_LIFETIME_SEC) problem(ctx, `${path}/maxTokenLifetime`, 'must be between 1m and 7d')
    const j = i.jwks
    const jwks = {
      fetchTimeoutMs: durationMs(j.fetchTimeout),
      maxBytes: j.maxBytes,
      refreshIntervalMs: durationMs(j.refreshInterval),
      minRefreshIntervalMs: durationMs(j.minRefreshInterval),
      maxRefreshIntervalMs: durationMs(j.maxRefreshInterval),
      cooldownMs: durationMs(j.cooldown),
      staleIfErrorMs: durationMs(j.staleIfError),
      maxKeys: j.maxKeys,
    }
    if (jwks.fetchTimeoutMs < 100 || jwks.fetchTimeoutMs > 60_000) problem(ctx, `${path}/jwks/fetchTimeout`, 'must be between 100ms and 60s')
    if (jwks.minRefreshIntervalMs < 1000) problem(ctx, `${path}/jwks/minRefreshInterval`, 'must be at least 1s')
    if (jwks.maxRefreshIntervalMs < jwks.minRefreshIntervalMs) problem(ctx, `${path}/jwks/maxRefreshInterval`, 'must be at least minRefreshInterval')
    if (jwks.refreshIntervalMs < jwks.minRefreshIntervalMs || jwks.refreshIntervalMs > jwks.maxRefreshIntervalMs) {
      problem(ctx, `${path}/jwks/refreshInterval`, 'must lie between minRefreshInterval and maxRefreshInterval')
    }
    if (jwks.cooldownMs < 1000) problem(ctx, `${path}/jwks/cooldown`, 'must be at least 1s (it bounds the fetches a flood of unknown kids can cause)')
    const scopeClaim = typeof i.scopeClaim === 'string' ? [i.scopeClaim] : i.scopeClaim
    return {
      name: i.name,
      issuer: i.issuer,
      discovery: i.discovery,
      jwksUri: i.jwksUri,
      audiences: i.audiences,
      algorithms: i.algorithms as IssuerAlgorithm[],
      typ: i.typ,
      scopeClaim,
      clockSkewSec,
      maxTokenLifetimeSec,
      requiredClaims: i.requiredClaims,
      allowInsecureHttp: insecure,
      jwks,
    }
  })
}
