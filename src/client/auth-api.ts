/**
 * The gateway's auth endpoints (README "Sessions: the client's side"), one function each.
 * Requests are JSON POSTs, as the gateway's CSRF check demands; in cookie mode they carry
 * credentials so the HttpOnly refresh cookie goes out and comes back even when the app
 * and the gateway are different (same-site) origins.
 */
import {
  ClientErrorCode, PortcullisError, TimeoutError, errorFromAnswer, networkError, readErrorAnswer,
} from './errors.js'
import type { Clock, FetchLike, Timers } from './platform.js'
import { tokenFromAnswer, type AccessToken } from './token.js'

export type Transport = 'cookie' | 'body'

export interface TokenAnswer {
  accessToken: AccessToken
  /** body mode only; in cookie mode a refresh token in the body (transport `both`) is dropped unread */
  refreshToken: string | undefined
}

export interface AuthApiOptions {
  /** where the endpoints are: the gateway's origin + `/auth/` (client.ts authBaseOf), never under an API path */
  base: URL
  transport: Transport
  fetch: FetchLike
  now: Clock
  timers: Timers
  timeoutMs: number
}

export class AuthApi {
  readonly #o: AuthApiOptions

  constructor (options: AuthApiOptions) {
    this.#o = options
  }

  async login (username: string, password: string): Promise<TokenAnswer> {
    return await this.#tokens(this.#url('login'), { username, password })
  }

  /** body mode passes the stored token; cookie mode passes nothing (the cookie carries it) */
  async refresh (refreshToken: string | undefined): Promise<TokenAnswer> {
    return await this.#tokens(this.#url('refresh'), refreshToken === undefined ? {} : { refresh_token: refreshToken })
  }

  async logout (refreshToken: string | undefined, accessToken: string | undefined): Promise<void> {
    await this.#post(this.#url('logout'), refreshToken === undefined ? {} : { refresh_token: refreshToken }, accessToken)
  }

  async logoutAll (accessToken: string): Promise<void> {
    await this.#post(this.#url('logout-all'), {}, accessToken)
  }

  async #tokens (url: URL, body: object): Promise<TokenAnswer> {
    const sentAtMs = this.#o.now()
    const path = url.pathname
    const res = await this.#post(url, body, undefined)
    let json: { access_token?: unknown, expires_in?: unknown, refresh_token?: unknown }
    try {
      json = await res.json() as typeof json
    } catch (err) {
      throw new PortcullisError(ClientErrorCode.invalidResponse, res.status, `${path}: the answer is not JSON`, { cause: err })
    }
    if (typeof json?.access_token !== 'string' || json.access_token === '') {
      throw new PortcullisError(ClientErrorCode.invalidResponse, res.status, `${path}: the answer has no access_token`)
    }
    const refreshToken = this.#o.transport === 'body' && typeof json.refresh_token === 'string' ? json.refresh_token : undefined
    if (this.#o.transport === 'body' && refreshToken === undefined) {
      throw new PortcullisError(ClientErrorCode.transportMismatch, res.status,
        `${path}: no refresh_token in the answer; set the gateway's tokens.refresh.transport to body (or both), or use cookie mode`)
    }
    return { accessToken: tokenFromAnswer(json.access_token, json.expires_in, sentAtMs, this.#o.now()), refreshToken }
  }

  /** an endpoint under the auth base (`login` → …/auth/login) */
  #url (endpoint: string): URL {
    return new URL(endpoint, this.#o.base)
  }

  /**
   * one POST with a timeout; resolves with a 2xx Response, rejects with a typed error
   * otherwise (errors.ts errorFromAnswer: a refusal without the gateway's header is an
   * UpstreamError, never the end of the session)
   */
  async #post (url: URL, body: object, accessToken: string | undefined): Promise<Response> {
    const path = url.pathname
    const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
    if (accessToken !== undefined) headers.authorization = `Bearer ${accessToken}`
    const abort = new AbortController()
    let timedOut = false
    const timer = this.#o.timers.setTimeout(() => { timedOut = true; abort.abort() }, this.#o.timeoutMs)
    let res: Response
    try {
      res = await this.#o.fetch(url.href, {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
        credentials: this.#o.transport === 'cookie' ? 'include' : 'omit',
        signal: abort.signal,
      })
    } catch (err) {
      if (timedOut) throw new TimeoutError(`${path}: no answer within ${this.#o.timeoutMs} ms`, { cause: err })
      throw networkError(err, path)
    } finally {
      this.#o.timers.clearTimeout(timer)
    }
    if (res.ok) return res
    throw errorFromAnswer(await readErrorAnswer(res))
  }
}
