import { durationSec } from '../duration.js'
import type { GatewayConfig, IdentityMapping } from '../types.js'
import { problem, type CheckContext, type Raw } from './context.js'

/**
 * `identity:` — what upstreams receive. The header names the gateway writes may never be
 * ones that steer HTTP itself or the gateway's own contract.
 */

/** headers the identity mapping, the claims header and the assertion may never write */
export const FORBIDDEN_IDENTITY_HEADERS: ReadonlySet<string> = new Set([
  'host', 'authorization', 'cookie', 'set-cookie', 'content-length', 'content-type', 'content-encoding', 'transfer-encoding',
  'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-connection', 'x-request-id',
  'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'forwarded', 'x-real-ip', 'expect',
  'traceparent', 'tracestate', 'sec-websocket-protocol', 'sec-websocket-key', 'sec-websocket-version', 'sec-websocket-extensions',
  'x-http-method-override', 'x-http-method', 'x-method-override', 'origin', 'range', 'if-match', 'if-none-match',
])
const MAX_ASSERTION_LIFETIME_SEC = 3600

export function checkIdentity (id: Raw, tokensAlgorithm: string | undefined, ctx: CheckContext): GatewayConfig['identity'] {
  const seen = new Map<string, string>()
  const claim = (header: string, path: string): string => {
    const name = header.toLowerCase()
    if (FORBIDDEN_IDENTITY_HEADERS.has(name) || name.startsWith('x-forwarded-') || name.startsWith('sec-')) {
      problem(ctx, path, `"${name}" cannot carry identity`)
    }
    const other = seen.get(name)
    if (other !== undefined) problem(ctx, path, `header "${name}" is also written by ${other}`)
    seen.set(name, path)
    return name
  }
  const mappings: IdentityMapping[] = []
  if (Array.isArray(id.headers)) {
    (id.headers as Raw[]).forEach((m, i) => {
      const path = `/identity/headers/${i}`
      if ((m.claim === undefined) === (m.path === undefined)) problem(ctx, path, 'give exactly one of claim or path')
      mappings.push({ path: m.path ?? [m.claim ?? ''], header: claim(m.header, `${path}/header`) })
    })
  } else {
    for (const [c, header] of Object.entries(id.headers as Record<string, string>)) {
      mappings.push({ path: [c], header: claim(header, `/identity/headers/${c}`) })
    }
  }
  const claimsHeader = String(id.claimsHeader).toLowerCase()
  if (claimsHeader !== '') claim(claimsHeader, '/identity/claimsHeader')
  let assertion: GatewayConfig['identity']['assertion']
  if (id.assertion !== undefined) {
    const header = claim(id.assertion.header, '/identity/assertion/header')
    const lifetimeSec = durationSec(id.assertion.lifetime)
    if (lifetimeSec < 10 || lifetimeSec > MAX_ASSERTION_LIFETIME_SEC) problem(ctx, '/identity/assertion/lifetime', 'must be between 10s and 1h')
    // upstreams verify assertions with the public keys in the JWKS: a shared secret cannot be published
    if (tokensAlgorithm === 'HS256') problem(ctx, '/identity/assertion', 'assertions are signed with the tokens key and verified from the JWKS: tokens.algorithm must be asymmetric, not HS256')
    assertion = { header, lifetimeSec }
  }
  return {
    mappings,
    claimsHeader,
    reservedPrefix: String(id.reservedPrefix).toLowerCase(),
    maxHeaderBytes: id.maxHeaderBytes,
    forwardAuthorization: id.forwardAuthorization,
    forwardRefreshCookie: id.forwardRefreshCookie,
    assertion,
  }
}
