/**
 * The portcullis client: log in, call APIs through the gateway with the access token,
 * refresh it before it expires and once when the gateway says it expired, log out, and
 * tell the app when the session is over. See session.ts for the token's life and
 * coordination.ts for tabs.
 */
import { AuthApi, type Transport } from './auth-api.js'
import { realmLocks, LocalLocks } from './coordination.js'
import {
  ClientErrorCode, PortcullisError, errorFromResponse, networkError, readErrorAnswer, saysTokenExpired, saysTokenRevoked,
} from './errors.js'
import { Emitter, type ClientEvents } from './events.js'
import {
  defaultTimers, pageOrigin, platformBroadcastChannel, platformLocks, platformWebSocket,
  type BroadcastChannelFactory, type Clock, type FetchLike, type LockManagerLike, type Timers,
  type WebSocketConstructorLike, type WebSocketLike,
} from './platform.js'
import { memoryRefreshTokenStore, type RefreshTokenStore } from './refresh-store.js'
import { abortable, isReplayable, isRequest, withBearer, type RequestInput } from './request.js'
import { Session, type SessionStatus } from './session.js'
import { decodeJwtPayload, type AccessToken } from './token.js'
import { WS_POLICY_VIOLATION, gatewaySocketUrl, socketProtocols } from './websocket.js'

export const DEFAULT_REFRESH_MARGIN_SEC = 60
export const DEFAULT_AUTH_TIMEOUT_MS = 30_000
/** where the gateway answers login, refresh and logout: its origin's root (config/checks: no route may take /auth) */
export const DEFAULT_AUTH_PATH = '/auth/'

export interface CrossTabOptions {
  /** names the lock and the channel; default: the gateway's origin (the refresh cookie's scope) */
  key?: string
  /** default: navigator.locks, else a lock shared within this JS realm */
  locks?: LockManagerLike
  /** default: the platform's BroadcastChannel; null: none */
  channel?: BroadcastChannelFactory | null
}

export interface ClientOptions {
  /** the gateway, e.g. https://api.example.test; in a browser the page's origin by default; relative API URLs resolve against it */
  baseUrl?: string | URL
  /**
   * The path of the gateway's auth endpoints on baseUrl's origin; default `/auth/`, whatever
   * path baseUrl has (`https://gw.test/api/` still logs in at `https://gw.test/auth/login`:
   * under a path, the auth endpoints would be an upstream's routes). Set it only when the
   * gateway itself is mounted under a prefix by a proxy in front of it, e.g. `/gw/auth/`.
   */
  authPath?: string
  /**
   * `cookie` (browsers): the refresh token stays in the gateway's HttpOnly cookie, the
   * access token in memory. `body` (Node, mobile): the refresh token is in the JSON and
   * kept in `refreshTokenStore`. Must match the gateway's `tokens.refresh.transport`
   * (`both` serves either).
   */
  transport: Transport
  /** body mode: where the refresh token lives; default in memory */
  refreshTokenStore?: RefreshTokenStore
  /** refresh this long before the access token expires, at most a quarter of its lifetime; default 60 */
  refreshMarginSec?: number
  /** also refresh on a timer when the margin is reached, not only when a call needs the token; default false */
  autoRefresh?: boolean
  /** for login, refresh and logout requests; default 30 000 */
  authTimeoutMs?: number
  /**
   * Share refreshes with other tabs / clients of the same session (a lock, and a
   * BroadcastChannel for the news). Default: on in cookie mode (every tab has the same
   * cookie), off in body mode — turn it on there only for clients that share one
   * refreshTokenStore, never for clients of different users.
   */
  crossTab?: boolean | CrossTabOptions
  /** injectable for tests and for platforms with their own; called as a plain function */
  fetch?: FetchLike
  /** the SDK clock, ms; only differences matter; default Date.now */
  now?: Clock
  /** for the auth timeout, the cross-tab handoff and autoRefresh; called as plain functions */
  timers?: Timers
  /** default: the platform's WebSocket (browsers, Node >= 22); in Node 20 pass the `ws` package's */
  WebSocket?: WebSocketConstructorLike
}

function detached (timers: Timers): Timers {
  const { setTimeout, clearTimeout } = timers
  return { setTimeout: (callback, delayMs) => setTimeout(callback, delayMs), clearTimeout: (handle) => { clearTimeout(handle) } }
}

/**
 * The auth endpoints' base: baseUrl's origin + `authPath`, an absolute path of its own, never
 * relative to baseUrl's path — `baseUrl: <gateway>/api/` posted the password to
 * `/api/auth/login`, an upstream's route, and adopted the token it answered
 * (fix-client-auth-under-base-path).
 */
function authBaseOf (base: URL, option: string | undefined): URL {
  const path = option ?? DEFAULT_AUTH_PATH
  if (!path.startsWith('/') || path.startsWith('//') || path.includes('\\') || /[?#]/.test(path) || path.split('/').some(s => s === '.' || s === '..')) {
    throw new TypeError(`portcullis client: authPath must be an absolute path such as /auth/, not ${JSON.stringify(path)}`)
  }
  const url = new URL(base.origin)
  url.pathname = path.endsWith('/') ? path : `${path}/`
  return url
}

function baseUrlOf (option: string | URL | undefined): URL {
  const raw = option ?? pageOrigin()
  if (raw === undefined) throw new TypeError('portcullis client: baseUrl is required outside a browser page')
  const base = new URL(raw)
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new TypeError(`portcullis client: baseUrl must be http(s), not ${base.protocol}`)
  if (!base.pathname.endsWith('/')) base.pathname += '/'
  base.search = ''
  base.hash = ''
  return base
}

export class PortcullisClient {
  readonly #base: URL
  readonly #fetch: FetchLike
  readonly #events = new Emitter<ClientEvents>()
  readonly #session: Session
  readonly #WebSocket: WebSocketConstructorLike | undefined

  constructor (options: ClientOptions) {
    if (options.transport !== 'cookie' && options.transport !== 'body') throw new TypeError("portcullis client: transport must be 'cookie' or 'body'")
    if (options.transport === 'cookie' && options.refreshTokenStore !== undefined) {
      throw new TypeError('portcullis client: cookie mode keeps the refresh token in the HttpOnly cookie; refreshTokenStore is for body mode')
    }
    this.#base = baseUrlOf(options.baseUrl)
    // injected functions are called detached: a browser's fetch, setTimeout or performance.now
    // throws "Illegal invocation" when called as a method of another object (the options)
    const fetchImpl = options.fetch ?? ((input, init) => globalThis.fetch(input, init))
    this.#fetch = (input, init) => fetchImpl(input, init)
    const nowImpl = options.now ?? Date.now
    const now: Clock = () => nowImpl()
    const timers = detached(options.timers ?? defaultTimers)
    const marginSec = options.refreshMarginSec ?? DEFAULT_REFRESH_MARGIN_SEC
    if (!(marginSec >= 0)) throw new TypeError('portcullis client: refreshMarginSec must be >= 0')
    this.#WebSocket = options.WebSocket ?? platformWebSocket()

    const crossTab = options.crossTab ?? options.transport === 'cookie'
    const shared = crossTab === false ? undefined : crossTab === true ? {} : crossTab
    const coordination = shared === undefined
      // alone: a private lock still serializes this client's own login, refresh and logout
      ? { key: this.#base.origin, locks: new LocalLocks(), channel: undefined }
      : {
          key: shared.key ?? this.#base.origin,
          locks: shared.locks ?? platformLocks() ?? realmLocks,
          channel: shared.channel === null ? undefined : shared.channel ?? platformBroadcastChannel(),
        }
    const api = new AuthApi({ base: authBaseOf(this.#base, options.authPath), transport: options.transport, fetch: this.#fetch, now, timers, timeoutMs: options.authTimeoutMs ?? DEFAULT_AUTH_TIMEOUT_MS })
    this.#session = new Session({
      api,
      transport: options.transport,
      store: options.transport === 'body' ? options.refreshTokenStore ?? memoryRefreshTokenStore() : undefined,
      coordination,
      events: this.#events,
      now,
      timers,
      refreshMarginMs: marginSec * 1000,
      autoRefresh: options.autoRefresh ?? false,
    })
  }

  /** 'unknown' until the first login or refresh, 'active', or 'ended' (log in again) */
  get status (): SessionStatus { return this.#session.status }

  /** returns the function that removes the listener */
  on<K extends keyof ClientEvents>(type: K, listener: (event: ClientEvents[K]) => void): () => void {
    return this.#events.on(type, listener)
  }

  /** throws InvalidCredentialsError, TooManyAttemptsError (retryAfterSec), NetworkError… */
  async login (username: string, password: string): Promise<void> {
    await this.#session.login(username, password)
  }

  /** resumes the session at start (page load: the cookie; Node: the store); false when there is none */
  async restore (): Promise<boolean> {
    return await this.#session.restore()
  }

  /** refreshes now even if the token is fresh, e.g. to pick up changed scopes */
  async refresh (): Promise<void> {
    await this.#session.refresh()
  }

  async logout (): Promise<void> {
    await this.#session.logout()
  }

  async logoutAll (): Promise<void> {
    await this.#session.logoutAll()
  }

  /** a valid access token, refreshed first when due (for a transport the SDK does not wrap) */
  async accessToken (): Promise<string> {
    return (await this.#session.current()).value
  }

  /** the current token's claims, UNVERIFIED: for display (user name, scopes), never for access decisions */
  claims (): Record<string, unknown> | undefined {
    const token = this.#session.token
    return token === undefined ? undefined : decodeJwtPayload(token.value)
  }

  /**
   * fetch() through the gateway with `Authorization: Bearer <access token>`. Relative URLs
   * resolve against baseUrl; other origins are refused (the token is never sent there).
   * Resolves with the Response whatever its status, like fetch. On the gateway's own 401
   * `token_expired` (its `portcullis-error` header; an upstream's 401 is only returned) the
   * token is refreshed and the request sent once more — unless its body cannot be
   * replayed (a ReadableStream or async iterable body, or a Request object carrying a
   * body): then the 401 is returned and the next call uses the new token. The gateway's 401
   * `token_revoked` is never retried (see Session.afterRevoked). Rejects with
   * SessionEndedError (log in again), NetworkError, or the caller's own AbortError.
   */
  async fetch (input: RequestInput, init: RequestInit = {}): Promise<Response> {
    const url = this.#resolve(input)
    const signal = init.signal ?? (isRequest(input) ? input.signal : undefined)
    const token = await abortable(this.#session.current(), signal)
    const res = await this.#send(url, input, init, token)
    if (res.status !== 401) return res
    const answer = await readErrorAnswer(res)
    if (saysTokenExpired(answer)) {
      const fresh = await abortable(this.#session.afterExpired(token), signal)
      if (!isReplayable(input, init)) return res
      await res.body?.cancel().catch(() => {})
      return await this.#send(url, input, init, fresh)
    }
    if (saysTokenRevoked(answer)) await this.#session.afterRevoked(token)
    return res
  }

  /** fetch() and parse JSON; a non-2xx answer rejects with the typed error (errors.ts; an upstream's: UpstreamError) */
  async json<T = unknown>(input: RequestInput, init: RequestInit = {}): Promise<T> {
    const headers = new Headers(init.headers)
    if (!headers.has('accept')) headers.set('accept', 'application/json')
    const res = await this.fetch(input, { ...init, headers })
    if (!res.ok) throw await errorFromResponse(res)
    if (res.status === 204) return undefined as T
    return await res.json() as T
  }

  /**
   * Opens a WebSocket through the gateway, the token in a subprotocol (websocket.ts),
   * refreshed first when due. Returns the socket at once, like `new WebSocket()`.
   *
   * The socket lives no longer than its token: the gateway closes it with 1008 when the
   * token expires or is revoked. Reconnect by calling webSocket() again on a 1008 close
   * (with a backoff, README): the SDK then refreshes before opening, and if the session is
   * over that call rejects with SessionEndedError (and `sessionEnded` fires) instead of
   * looping. 1008 is the gateway's alone: an upstream's own 1008 arrives as 4008
   * (WS_UPSTREAM_POLICY_VIOLATION) and leaves the token alone.
   */
  async webSocket<W extends WebSocketLike = WebSocketLike>(url: string | URL, protocols: readonly string[] = []): Promise<W> {
    const Ctor = this.#WebSocket
    if (Ctor === undefined) throw new PortcullisError(ClientErrorCode.unsupported, 0, 'no WebSocket on this platform; pass options.WebSocket')
    const target = gatewaySocketUrl(url, this.#base)
    if (target === undefined) throw this.#foreign(new URL(url, this.#base))
    socketProtocols(protocols, '') // reserved names refused before any refresh
    const token = await this.#session.current()
    const socket = new Ctor(target.href, socketProtocols(protocols, token.value))
    socket.addEventListener('close', (event) => {
      // the gateway's own close (expired, revoked, key withdrawn): drop the token so the
      // reconnect refreshes (and learns if the session is over). Only 1008: the gateway
      // relays an upstream's 1008 as 4008, and any other close leaves a valid token in use —
      // forgetting it on an upstream's close refreshed on every reconnect (fix-client-trusts-upstream-answers)
      if (event.code === WS_POLICY_VIOLATION) this.#session.forget(token)
    })
    return socket as W
  }

  /** stops timers and leaves the cross-tab channel; the client is not used afterwards */
  close (): void {
    this.#session.close()
  }

  #resolve (input: RequestInput): URL {
    const url = isRequest(input) ? new URL(input.url) : new URL(input, this.#base)
    if (url.origin !== this.#base.origin) throw this.#foreign(url)
    return url
  }

  #foreign (url: URL): PortcullisError {
    return new PortcullisError(ClientErrorCode.foreignOrigin, 0, `the access token is only sent to ${this.#base.origin}, not ${url.origin}`)
  }

  async #send (url: URL, input: RequestInput, init: RequestInit, token: AccessToken): Promise<Response> {
    const [target, targetInit] = withBearer(input, url, init, token)
    try {
      return await this.#fetch(target, targetInit)
    } catch (err) {
      throw networkError(err, `${init.method ?? (isRequest(input) ? input.method : 'GET')} ${url.pathname}`)
    }
  }
}

export function createClient (options: ClientOptions): PortcullisClient {
  return new PortcullisClient(options)
}
