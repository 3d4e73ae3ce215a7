import { isIP } from 'node:net'
import { Agent, request, type Dispatcher } from 'undici'
import { IssuerKeysError, IssuerKeysErrorCode } from './errors.js'

/**
 * One bounded GET of a JSON document (JWKS or discovery). Everything an IdP — or whoever sits
 * on the path to it — could use to hold the gateway is capped:
 * - one deadline for the whole exchange (connect + headers + body): undici's headersTimeout
 *   and bodyTimeout are inactivity timers, so a server that drips one byte a second (slow
 *   loris) would pass them; an AbortSignal.timeout does not;
 * - the body size, from Content-Length when announced and by counting bytes always;
 * - redirects are never followed (undici 7's request() follows none unless a redirect
 *   interceptor is composed into the dispatcher; an injected dispatcher must not have one):
 *   a 3xx is a failure that names its Location, the operator configures the final URL;
 * - only status 200; the body must be UTF-8 JSON. Content-Type is not checked: IdPs answer
 *   application/json, application/jwk-set+json or worse, and the JSON parse is the real test.
 */

export interface FetchLimits {
  dispatcher: Dispatcher
  timeoutMs: number
  maxBytes: number
  /** aborts the fetch early (close()) */
  signal?: AbortSignal
}

export interface FetchedJson {
  body: unknown
  /** freshness lifetime from Cache-Control max-age minus Age, seconds; undefined when absent */
  maxAgeSec: number | undefined
}

const ACCEPT = 'application/jwk-set+json, application/json;q=0.9'
const USER_AGENT = 'portcullis'

export async function fetchJson (url: URL, limits: FetchLimits): Promise<FetchedJson> {
  const deadline = AbortSignal.timeout(limits.timeoutMs)
  const signal = limits.signal === undefined ? deadline : AbortSignal.any([deadline, limits.signal])
  let res: Dispatcher.ResponseData
  try {
    res = await request(url, {
      method: 'GET',
      dispatcher: limits.dispatcher,
      signal,
      headersTimeout: limits.timeoutMs,
      bodyTimeout: limits.timeoutMs,
      headers: { accept: ACCEPT, 'user-agent': USER_AGENT },
    })
  } catch (err) {
    throw translate(err, url, deadline, limits)
  }
  // reading goes through the async iterator, which rejects on its own; this listener only
  // keeps a destroyed, unread body from raising an uncaught 'error' (RequestAbortedError)
  res.body.on('error', () => {})
  try {
    const status = res.statusCode
    if (status >= 300 && status < 400) {
      const location = String(res.headers.location ?? '')
      throw new IssuerKeysError(IssuerKeysErrorCode.redirect,
        `${url.href} answered ${status} (redirect to ${JSON.stringify(location.slice(0, 200))}); redirects are not followed, configure the final URL`)
    }
    if (status !== 200) throw new IssuerKeysError(IssuerKeysErrorCode.httpStatus, `${url.href} answered ${status}`)
    const announced = Number(res.headers['content-length'])
    if (announced > limits.maxBytes) throw tooLarge(url, limits)
    const chunks: Buffer[] = []
    let received = 0
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      received += chunk.length
      if (received > limits.maxBytes) throw tooLarge(url, limits)
      chunks.push(chunk)
    }
    let body: unknown
    try {
      body = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(Buffer.concat(chunks)))
    } catch (err) {
      throw new IssuerKeysError(IssuerKeysErrorCode.invalidJson, `${url.href} did not answer JSON`, err)
    }
    return { body, maxAgeSec: freshnessSec(res.headers['cache-control'], res.headers.age) }
  } catch (err) {
    // an unread or half-read body keeps the socket busy: drop it
    res.body.destroy()
    throw translate(err, url, deadline, limits)
  }
}

function tooLarge (url: URL, limits: FetchLimits): IssuerKeysError {
  return new IssuerKeysError(IssuerKeysErrorCode.tooLarge, `${url.href} answered more than ${limits.maxBytes} bytes`)
}

/** undici's errors, one way: our own pass through, the deadline is a timeout, the rest network. */
function translate (err: unknown, url: URL, deadline: AbortSignal, limits: FetchLimits): IssuerKeysError {
  if (err instanceof IssuerKeysError) return err
  if (deadline.aborted) return new IssuerKeysError(IssuerKeysErrorCode.timeout, `${url.href} did not answer within ${limits.timeoutMs} ms`, err)
  if (limits.signal?.aborted === true) return new IssuerKeysError(IssuerKeysErrorCode.closed, 'the key set was closed', err)
  const code = (err as { code?: unknown }).code
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT') {
    return new IssuerKeysError(IssuerKeysErrorCode.timeout, `${url.href} did not answer within ${limits.timeoutMs} ms`, err)
  }
  const detail = typeof code === 'string' ? code : (err as Error).message
  return new IssuerKeysError(IssuerKeysErrorCode.network, `${url.href} could not be fetched (${detail})`, err)
}

/**
 * Freshness lifetime (RFC 9111 §4.2.1) from `Cache-Control: max-age` minus `Age`.
 * `no-store` / `no-cache` count as 0 (the caller clamps to its minimum interval); several
 * max-age values take the smallest. Expires is not read: JWKS endpoints send max-age.
 */
export function freshnessSec (cacheControl: string | string[] | undefined, age?: string | string[]): number | undefined {
  if (cacheControl === undefined) return undefined
  let maxAge: number | undefined
  for (const part of (Array.isArray(cacheControl) ? cacheControl.join(',') : cacheControl).split(',')) {
    const [rawName, rawValue] = part.split('=', 2)
    const name = (rawName ?? '').trim().toLowerCase()
    if (name === 'no-store' || name === 'no-cache') return 0
    if (name !== 'max-age' || rawValue === undefined) continue
    const value = rawValue.trim().replace(/^"(.*)"$/, '$1')
    if (!/^\d{1,10}$/.test(value)) continue
    maxAge = Math.min(maxAge ?? Infinity, Number(value))
  }
  if (maxAge === undefined) return undefined
  const ageSec = Number(Array.isArray(age) ? age[0] : age)
  return Number.isInteger(ageSec) && ageSec > 0 ? Math.max(0, maxAge - ageSec) : maxAge
}

/**
 * Where keys may come from: https, or http to a loopback address when `allowInsecureHttp`
 * (tests, a sidecar IdP on the same host). Never userinfo in the URL. Returns the problem, or
 * undefined when the URL is acceptable.
 */
export function remoteUrlProblem (raw: string, allowInsecureHttp: boolean): string | undefined {
  let url: URL
  try {
    url = new URL(raw)
  } catch {
    return `${JSON.stringify(raw)} is not an absolute URL`
  }
  if (url.username !== '' || url.password !== '') return 'must not carry credentials'
  if (url.protocol === 'https:') return undefined
  if (url.protocol === 'http:') {
    if (!allowInsecureHttp) return 'must use https (http is allowed only to a loopback address with allowInsecureHttp)'
    return isLoopback(url.hostname) ? undefined : 'http is allowed only to a loopback address (127.0.0.0/8, [::1], localhost)'
  }
  return `must use https, not ${url.protocol.replace(/:$/, '')}`
}

/** 127.0.0.0/8, [::1] or localhost — the one test, shared with the config check (fix-idp-loopback-mismatch) */
export function isLoopback (hostname: string): boolean {
  const host = hostname.replace(/^\[(.*)\]$/, '$1')
  if (host === 'localhost') return true
  if (isIP(host) === 4) return host.startsWith('127.')
  return host === '::1'
}

let sharedDispatcher: Dispatcher | undefined

/**
 * The process-wide agent for key fetches, made on first use and kept for the process
 * lifetime. Separate from the upstream pools: a slow IdP must not queue behind (or ahead of)
 * proxied traffic. Keep-alive is short; a JWKS is fetched every few minutes at most.
 */
export function sharedKeyFetchDispatcher (): Dispatcher {
  sharedDispatcher ??= new Agent({ connections: 4, keepAliveTimeout: 4_000, keepAliveMaxTimeout: 10_000, connect: { timeout: 10_000 } })
  return sharedDispatcher
}
