/**
 * The browser suites' world: the app on one origin, the gateway on another, a third
 * origin the gateway does not know, all on 127.0.0.1 with their own ports:
 *
 *   app     http(s)://127.0.0.1:A  serves harness.js and the SDK (demo/sdk.ts)
 *   gateway http(s)://127.0.0.1:B  cors.origins = tokens.allowedOrigins = [app]
 *   third   http(s)://127.0.0.1:C  the same page, an origin nobody listed
 *
 * Behind the gateway a recording HTTP upstream (/api, /open) and a `ws` upstream (/ws).
 * The gateway logs its decision lines into `decisions` (a pino logger with an in-memory
 * destination): that is how the suites count refreshes — at the gateway, the only place
 * that sees every tab's requests.
 *
 * Plain HTTP is enough: Chromium treats 127.0.0.1 as potentially trustworthy, so the
 * gateway's `__Host-` refresh cookie (Secure) is stored and sent, Web Locks exist (secure
 * context), and the two ports are one site (SameSite=Strict cookies travel). Under
 * scripts/test-tls.sh every server here speaks HTTPS with the test certificate.
 */
import { readFileSync } from 'node:fs'
import { createServer as createHttpServer, type RequestListener, type Server, type ServerResponse } from 'node:http'
import { createServer as createHttpsServer } from 'node:https'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import type { Browser } from 'playwright-core'
import { clientModules } from '../../demo/sdk.js'
import { BATCH_INTERVAL_MS } from '../../plugins/access-log.js'
import { usersAdd } from '../../src/sessions/admin-commands.js'
import { openStore, type Store } from '../../src/sessions/store.js'
import { launchBrowser, newContext, openPage, type OpenedPage } from '../fixtures/browser.js'
import { baseConfig, makeKey, PUBLIC_SCHEME, startGateway, type StartedGateway } from '../fixtures/gateway.js'
import { makeClock, type TestClock } from '../fixtures/sessions-clock.js'
import { startUpstream, type RecordingUpstream, type UpstreamHandler } from '../fixtures/upstream.js'
import { startWsUpstream, type WsUpstream } from '../fixtures/ws-upstream.js'

export const ADMIN_TOKEN = 'browser-suite-admin-token-0123456789abcdef'
export const ACCESS_TTL_SEC = 300
export const CLOCK_SKEW_SEC = 30
export const REFRESH_COOKIE = '__Host-portcullis-rt'
/** the SDK's default margin (60 s) applies: a quarter of 300 s is more */
export const REFRESH_MARGIN_SEC = 60

interface Tap { teardown: (fn: () => unknown) => void }
interface Failable { fail: (message: string) => void }

/** one decision line of the gateway (README "Logs") */
export interface Decision {
  route: string | null
  granted: boolean
  reason: string
  sub: string | null
  method: string
  path: string
  status: number
}

export interface Site {
  /** scheme://127.0.0.1:port */
  origin: string
  close: () => Promise<void>
}

export interface BrowserEnv {
  browser: Browser
  gw: StartedGateway
  app: Site
  third: Site
  upstream: RecordingUpstream
  ws: WsUpstream
  store: Store
  gatewayClock: TestClock
  decisions: Decision[]
  /** decision lines so far, after the gateway's pending ones are written */
  settledDecisions: () => Promise<Decision[]>
  /** POST /auth/refresh requests the gateway answered so far */
  refreshes: () => Promise<number>
  addUser: (name: string) => Promise<{ id: string, password: string }>
  admin: (method: string, path: string) => Promise<Response>
  /** a tab on `site` (default: the app) in `context` (default: a new browser profile), the SDK loaded; `query` is added to the page's URL */
  openTab: (site?: Site, context?: Awaited<ReturnType<typeof newContext>>, query?: string) => Promise<OpenedPage>
  newContext: () => ReturnType<typeof newContext>
}

function tlsOptions (): { key: Buffer, cert: Buffer } | undefined {
  if (PUBLIC_SCHEME !== 'https') return undefined
  return { key: readFileSync(process.env.PORTCULLIS_TEST_TLS_KEY as string), cert: readFileSync(process.env.PORTCULLIS_TEST_TLS_CERT as string) }
}

async function listenOn (handler: RequestListener): Promise<{ server: Server, origin: string }> {
  const tls = tlsOptions()
  const server: Server = tls === undefined ? createHttpServer(handler) : createHttpsServer(tls, handler)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return { server, origin: `${PUBLIC_SCHEME}://127.0.0.1:${(server.address() as AddressInfo).port}` }
}

const closeServer = (server: Server): Promise<void> => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()) })

const HARNESS_JS = readFileSync(new URL('./harness.js', import.meta.url), 'utf8')
const HARNESS_HTML = '<!doctype html><meta charset="utf-8"><title>portcullis browser suite</title><script type="module" src="/harness.js"></script>'

/** a static site: the harness page, its script and the SDK modules */
export async function startSite (t: Tap): Promise<Site> {
  const sdk = clientModules()
  const send = (res: ServerResponse, type: string, body: string): void => {
    res.writeHead(200, { 'content-type': `${type}; charset=utf-8`, 'cache-control': 'no-store' }).end(body)
  }
  const { server, origin } = await listenOn((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname
    const module = path.startsWith('/sdk/') ? sdk.get(path.slice('/sdk/'.length)) : undefined
    if (path === '/') send(res, 'text/html', HARNESS_HTML)
    else if (path === '/harness.js') send(res, 'text/javascript', HARNESS_JS)
    else if (module !== undefined) send(res, 'text/javascript', module)
    else if (path === '/favicon.ico') res.writeHead(204).end() // no 404 in the console
    else res.writeHead(404).end()
  })
  t.teardown(() => closeServer(server))
  return { origin, close: () => closeServer(server) }
}

/**
 * A gateway in cookie mode for an app on its own origin (`app`: CORS with credentials, the
 * app's origin allowed for the cookie endpoints), with `routes` as in gateway.yaml and a user
 * alice (scope orders:read) — for suites that need routes of their own beside the app
 */
export async function startCookieGateway (t: Tap, app: Site, routes: Array<Record<string, unknown>>): Promise<{ gw: StartedGateway, store: Store, password: string }> {
  const store = await openStore({ dataDir: 'memory://' })
  const config = baseConfig(makeKey('EdDSA'), routes, {
    tokens: { refresh: { transport: 'cookie' }, allowedOrigins: [app.origin] },
    identity: { headers: { sub: 'x-user-id' } },
  })
  config.cors = { origins: [app.origin], credentials: true, maxAge: '10m' }
  const gw = await startGateway(t, config, { store })
  const password = 'pw-alice-0123456789'
  await usersAdd(store, { name: 'alice', password, scopes: ['orders:read'] })
  return { gw, store, password }
}

/**
 * lets the gateway's access log hand its pending lines over: a line waits at most
 * BATCH_INTERVAL_MS to join a batch, so a timer set now for longer fires after the batch's
 * (timers run in order of expiry), then a few turns for the write itself
 */
const nextTurns = async (): Promise<void> => {
  await new Promise((resolve) => setTimeout(resolve, BATCH_INTERVAL_MS + 1))
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve))
}

/** `upstream`: the API upstream's handler (default: 200 JSON `{ok, url}`, test/fixtures/upstream.ts) */
export async function startBrowserEnv (t: Tap, opts: { upstream?: UpstreamHandler } = {}): Promise<BrowserEnv> {
  const browser = await launchBrowser(t)
  const [app, third, upstream, ws] = await Promise.all([startSite(t), startSite(t), startUpstream(opts.upstream), startWsUpstream().then((ws) => { t.teardown(ws.close); return ws })])
  t.teardown(() => upstream.close())

  const decisions: Decision[] = []
  const destination = {
    write: (chunk: string): void => {
      for (const line of chunk.split('\n')) {
        if (line === '') continue
        const entry = JSON.parse(line) as Decision & { msg?: string }
        if (entry.msg === 'decision') decisions.push(entry)
      }
    },
  }
  const store = await openStore({ dataDir: 'memory://' })
  const gatewayClock = makeClock(Date.now())
  const config = baseConfig(makeKey('EdDSA'), [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'chat', prefix: '/ws', upstream: ws.url, websocket: true, auth: 'required' },
  ], {
    admin: { token: ADMIN_TOKEN },
    tokens: {
      accessTokenTtl: `${ACCESS_TTL_SEC}s`,
      clockSkew: `${CLOCK_SKEW_SEC}s`,
      // cookie only: the refresh token never appears in a body script could read
      refresh: { transport: 'cookie' },
      allowedOrigins: [app.origin],
    },
    identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes' } },
  })
  config.cors = { origins: [app.origin], credentials: true, maxAge: '10m' }
  const gw = await startGateway(t, config, { store, clock: gatewayClock, logger: pino({ level: 'info' }, destination) })
  // teardowns run last-registered first: the browser goes before the servers, so no idle
  // keep-alive (or HTTP/2 session, under scripts/test-tls.sh h2) holds the gateway's drain
  t.teardown(() => browser.close())

  const settledDecisions = async (): Promise<Decision[]> => { await nextTurns(); return decisions }
  const env: BrowserEnv = {
    browser,
    gw,
    app,
    third,
    upstream,
    ws,
    store,
    gatewayClock,
    decisions,
    settledDecisions,
    refreshes: async () => (await settledDecisions()).filter((d) => d.route === 'auth.refresh' && d.method === 'POST').length,
    addUser: async (name) => {
      const password = `pw-${name}-0123456789`
      const user = await usersAdd(store, { name, password, scopes: ['orders:read'] }, { clock: gatewayClock })
      return { id: user.id, password }
    },
    admin: (method, path) => fetch(`${gw.adminUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN_TOKEN}` } }),
    newContext: () => newContext(browser),
    openTab: async (site = app, context, query = '') => {
      const ctx = context ?? await newContext(browser)
      return await openPage(ctx, `${site.origin}/?gateway=${encodeURIComponent(gw.url)}${query}`, 'globalThis.harness !== undefined')
    },
  }
  return env
}

/** what harness.js functions resolve with */
export type Settled<T> = { ok: true, value: T } | { ok: false, name?: string, code?: string, status?: number, reason?: string, message: string }
export interface Described { status: number, headers: Record<string, string>, body: string }

/** calls `harness[name](...args)` in the page (the harness is plain JS: the suite's tsconfig has no DOM types) */
export async function call<T = unknown> (opened: OpenedPage, name: string, ...args: unknown[]): Promise<T> {
  return await opened.page.evaluate(([n, a]) => {
    const h = (globalThis as unknown as { harness: Record<string, (...x: unknown[]) => unknown> }).harness
    return h[n as string]!(...(a as unknown[]))
  }, [name, args] as const) as T
}

/** the value of a settled harness call; a failure fails the test with what the page said */
export function ok<T> (t: Failable, r: Settled<T>, what: string): T {
  if (!r.ok) t.fail(`${what}: ${r.name ?? ''} ${r.code ?? ''} ${r.message}`)
  return (r as { value: T }).value
}

/** polls `check` (page state changes arrive asynchronously, e.g. another tab's news) */
export async function eventually<T> (check: () => Promise<T | undefined>, timeoutMs = 5000): Promise<T | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await check()
    if (value !== undefined || Date.now() > deadline) return value
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}
