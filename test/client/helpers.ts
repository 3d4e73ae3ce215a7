/**
 * Shared setup for the client SDK suites: a real gateway with an embedded store and a
 * recording upstream, a fetch wrapper that counts what the SDK sends, and a fetch wrapper
 * that behaves like a browser's cookie jar (for cookie mode in Node, which has none).
 */
import { openStore } from '../../src/sessions/store.js'
import type { Store } from '../../src/sessions/store.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import type { FetchLike } from '../../src/client/index.js'
import { baseConfig, makeKey, startGateway, type StartedGateway } from '../fixtures/gateway.js'
import { makeClock, type TestClock } from '../fixtures/sessions-clock.js'
import { startUpstream, type RecordingUpstream } from '../fixtures/upstream.js'

/** the SPA's origin: allowed by the gateway's CSRF check */
export const ORIGIN = 'https://app.example.test'
export const ADMIN_TOKEN = 'client-sdk-suite-admin-token-0123456789abcdef'
export const ACCESS_TTL_SEC = 300
export const CLOCK_SKEW_SEC = 30
export const REUSE_GRACE_SEC = 10
export const REFRESH_TTL_SEC = 7 * 24 * 3600

export interface Env {
  gw: StartedGateway
  upstream: RecordingUpstream
  store: Store
  /** the gateway's clock (starts in 2030: nothing in the SDK may compare it with its own) */
  gatewayClock: TestClock
  addUser: (name: string, scopes?: string[]) => Promise<string>
  /** POST to the admin API with the admin token */
  admin: (path: string, body?: unknown) => Promise<Response>
  /** GET /api/probe with a raw token, bypassing the SDK */
  probe: (token: string) => Promise<{ status: number, code: string | undefined }>
}

export interface EnvOptions {
  transport: 'body' | 'cookie'
  /** extra routes (e.g. a websocket route) */
  routes?: unknown[]
  /** extra top-level config sections (e.g. cors) */
  config?: Record<string, unknown>
}

/**
 * One gateway per test file: the embedded store costs seconds to create. The gateway takes
 * ownership of the store and closes it in teardown.
 */
export async function startEnv (t: Tap, opts: EnvOptions): Promise<Env> {
  const key = makeKey('EdDSA')
  const gatewayClock = makeClock()
  const store = await openStore({ dataDir: 'memory://' })
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'reports', prefix: '/reports', upstream: upstream.url, auth: 'required', scopes: { '*': ['reports:read'] } },
    ...opts.routes ?? [],
  ], {
    admin: { token: ADMIN_TOKEN },
    tokens: {
      accessTokenTtl: `${ACCESS_TTL_SEC}s`,
      refreshTokenTtl: `${REFRESH_TTL_SEC}s`,
      sessionMaxAge: `${2 * REFRESH_TTL_SEC}s`,
      clockSkew: `${CLOCK_SKEW_SEC}s`,
      refresh: { transport: opts.transport, reuseGrace: `${REUSE_GRACE_SEC}s` },
      allowedOrigins: [ORIGIN],
    },
    identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes', preferred_username: 'x-user-name' } },
    ...opts.config,
  }), { store, clock: gatewayClock })
  return {
    gw,
    upstream,
    store,
    gatewayClock,
    addUser: async (name, scopes = ['orders:read']) => (await usersAdd(store, { name, password: `pw-${name}`, scopes }, { clock: gatewayClock })).id,
    admin: (path, body) => fetch(`${gw.adminUrl}${path}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
      body: JSON.stringify(body ?? {}),
    }),
    probe: async (token) => {
      const res = await fetch(`${gw.url}/api/probe`, { headers: { authorization: `Bearer ${token}` } })
      const body = await res.json().catch(() => ({})) as { code?: string }
      return { status: res.status, code: body.code }
    },
  }
}

export interface Tap { teardown: (fn: () => unknown) => void }

export interface Call { method: string, path: string, body: string | undefined }

export interface Recorder {
  fetch: FetchLike
  calls: Call[]
  count: (path: string) => number
}

const pathOf = (input: string | URL | Request): string =>
  new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url).pathname

/** counts every request the SDK makes; `inner` may inject a fault (then the test says so) */
export function recorder (inner: FetchLike = (input, init) => fetch(input, init)): Recorder {
  const calls: Call[] = []
  return {
    calls,
    count: (path) => calls.filter((c) => c.path === path).length,
    fetch: async (input, init) => {
      calls.push({
        method: init?.method ?? (input instanceof Request ? input.method : 'GET'),
        path: pathOf(input),
        body: typeof init?.body === 'string' ? init.body : undefined,
      })
      return await inner(input, init)
    },
  }
}

export interface JarCookie { value: string, attrs: Record<string, string | true> }

export interface Browser {
  fetch: FetchLike
  /** name → cookie, for the gateway's host */
  jar: Map<string, JarCookie>
  /** every request: its path and the Cookie header the browser added */
  log: Array<{ path: string, cookie: string | undefined }>
}

function parseSetCookie (header: string): { name: string } & JarCookie {
  const [pair = '', ...rest] = header.split(';')
  const eq = pair.indexOf('=')
  const attrs: Record<string, string | true> = {}
  for (const a of rest) {
    const i = a.indexOf('=')
    if (i === -1) attrs[a.trim().toLowerCase()] = true
    else attrs[a.slice(0, i).trim().toLowerCase()] = a.slice(i + 1).trim()
  }
  return { name: pair.slice(0, eq).trim(), value: pair.slice(eq + 1).trim(), attrs }
}

/**
 * What a browser does around fetch() for a page on `origin` calling the gateway on
 * another, same-site origin — as far as cookie mode depends on it:
 * - it sends `Origin` and `Sec-Fetch-Site: same-site`;
 * - it sends and stores cookies only with `credentials: 'include'` (cross-origin rules);
 * - it enforces the `__Host-` prefix (Secure, Path=/, no Domain) and refuses Secure
 *   cookies from an origin that is not potentially trustworthy (https, or loopback);
 * - script never sees `Set-Cookie` (a forbidden response header): it is removed from the
 *   Response the SDK gets, so an SDK that tried to read the refresh token would fail here.
 * One jar per "browser"; several clients on one jar are several tabs.
 */
export function browser (origin: string, inner: FetchLike = (input, init) => fetch(input, init)): Browser {
  const jar = new Map<string, JarCookie>()
  const log: Browser['log'] = []
  const trustworthy = (u: URL): boolean => u.protocol === 'https:' || ['127.0.0.1', 'localhost', '[::1]'].includes(u.hostname)
  return {
    jar,
    log,
    fetch: async (input, init = {}) => {
      const url = new URL(typeof input === 'string' ? input : input instanceof URL ? input.href : input.url)
      const withCookies = init.credentials === 'include'
      const headers = new Headers(init.headers)
      headers.set('origin', origin)
      headers.set('sec-fetch-site', 'same-site')
      headers.delete('cookie')
      if (withCookies && jar.size > 0) {
        headers.set('cookie', [...jar].filter(([, c]) => c.attrs.secure !== true || trustworthy(url)).map(([n, c]) => `${n}=${c.value}`).join('; '))
      }
      log.push({ path: url.pathname, cookie: headers.get('cookie') ?? undefined })
      const res = input instanceof Request ? await inner(new Request(input, { ...init, headers })) : await inner(url.href, { ...init, headers })
      const visible = new Headers(res.headers)
      visible.delete('set-cookie')
      if (withCookies) {
        for (const line of res.headers.getSetCookie()) {
          const c = parseSetCookie(line)
          if (c.attrs.secure === true && !trustworthy(url)) continue
          if (c.name.startsWith('__Host-') && (c.attrs.secure !== true || c.attrs.path !== '/' || 'domain' in c.attrs)) continue
          if (c.attrs['max-age'] === '0') jar.delete(c.name)
          else jar.set(c.name, { value: c.value, attrs: c.attrs })
        }
      }
      return new Response(res.body, { status: res.status, statusText: res.statusText, headers: visible })
    },
  }
}

export { makeClock, type TestClock }
export { manualTimers, rejection, waitFor, type ManualTimers } from './util.js'
