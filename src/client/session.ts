/**
 * The session as this tab sees it: the access token (memory only), its status, and every
 * way it changes — login, refresh (proactive, reactive, background), adoption from another
 * tab, logout, the end. All refreshes go through one promise per tab (single flight) and
 * one lock per gateway origin (coordination.ts); login and logout take the same lock, so
 * no refresh stores a token after a logout cleared it.
 *
 * When the network fails mid-refresh (decided here, see README "Client SDK"): the refresh
 * rejects with NetworkError/TimeoutError and NOTHING else changes — the session is not
 * declared ended (only the gateway's invalid_grant does that), the refresh token is kept,
 * and the current access token keeps being sent until its estimated expiry (the gateway
 * accepts it until then); the next call that needs a token tries the refresh again. Caveat:
 * if the answer was lost AFTER the gateway rotated, the kept refresh token is spent; a
 * retry within the gateway's reuse grace (10 s by default) gets the same successor,
 * a later one is refused and the session ends (the gateway cannot tell a lost answer
 * from a stolen token).
 */
import type { AuthApi, Transport } from './auth-api.js'
import { Coordinator, type CrossTabMessage } from './coordination.js'
import { PortcullisError, SessionEndReason, SessionEndedError } from './errors.js'
import type { ClientEvents, Emitter, TokenChangedEvent } from './events.js'
import type { BroadcastChannelFactory, Clock, LockManagerLike, Timers } from './platform.js'
import { unrefTimer } from './platform.js'
import type { RefreshTokenStore } from './refresh-store.js'
import { decodeJwtPayload, isExpired, marginMs, needsRefresh, type AccessToken } from './token.js'

export type SessionStatus = 'unknown' | 'active' | 'ended'

/** a background refresh that failed for want of network is retried this much later */
const BACKGROUND_RETRY_MS = 15_000

const END_REASONS = new Set<string>(Object.values(SessionEndReason))

/** the gateway's session id claim, to tell one session's news from another's */
function sidOf (token: AccessToken | undefined): string | undefined {
  const sid = token === undefined ? undefined : decodeJwtPayload(token.value)?.sid
  return typeof sid === 'string' ? sid : undefined
}

export interface SessionOptions {
  api: AuthApi
  transport: Transport
  /** body mode only */
  store: RefreshTokenStore | undefined
  coordination: { key: string, locks: LockManagerLike, channel: BroadcastChannelFactory | undefined }
  events: Emitter<ClientEvents>
  now: Clock
  timers: Timers
  refreshMarginMs: number
  autoRefresh: boolean
}

export class Session {
  readonly #o: SessionOptions
  readonly #coord: Coordinator
  #token: AccessToken | undefined
  #status: SessionStatus = 'unknown'
  #endReason: SessionEndReason = SessionEndReason.noSession
  #inflight: Promise<AccessToken> | undefined
  #timer: unknown
  #closed = false

  constructor (options: SessionOptions) {
    this.#o = options
    this.#coord = new Coordinator({ ...options.coordination, timers: options.timers, onMessage: (m) => { this.#onMessage(m) } })
  }

  get status (): SessionStatus { return this.#status }
  get token (): AccessToken | undefined { return this.#token }

  /** a token to send now: the current one, refreshed first when it is within the margin of its expiry */
  async current (): Promise<AccessToken> {
    const token = this.#token
    if (token !== undefined && !this.#stale(token)) return token
    if (token === undefined && this.#status === 'ended') throw new SessionEndedError(this.#endReason)
    try {
      return await this.#refresh(token?.value, false)
    } catch (err) {
      // not the end of the session (network, timeout, 5xx): a token that has not expired is still good to send
      const still = this.#token
      if (!(err instanceof SessionEndedError) && still !== undefined && !isExpired(still, this.#o.now)) return still
      throw err
    }
  }

  /** the gateway answered token_expired for `sent`: a newer token, refreshed unless another call or tab already did */
  async afterExpired (sent: AccessToken): Promise<AccessToken> {
    // the gateway's verdict beats our estimate: never send this one again
    if (this.#token?.value === sent.value) this.#token = { ...sent, expiresAtMs: this.#o.now() }
    const current = this.#token
    if (current !== undefined && current.value !== sent.value && !this.#stale(current)) return current
    if (current === undefined && this.#status === 'ended') throw new SessionEndedError(this.#endReason)
    return await this.#refresh(sent.value, false)
  }

  /**
   * The gateway answered token_revoked for `sent`. The request is not retried (a revoked
   * token is not a timing problem); the token is dropped and the gateway is asked once,
   * by a refresh, whether the session still lives: after logout-all or an operator's
   * revocation it does not, and `sessionEnded` fires now rather than at the next expiry.
   */
  async afterRevoked (sent: AccessToken): Promise<void> {
    if (this.#token?.value === sent.value) this.#token = undefined
    if (this.#status === 'ended') return
    try {
      await this.#refresh(sent.value, false)
    } catch (err) {
      if (err instanceof SessionEndedError) throw err
      // network trouble: the next call refreshes first, since the token is gone
    }
  }

  /** a socket opened with `sent` was closed 1008 (expired or revoked): the next use refreshes first */
  forget (sent: AccessToken): void {
    if (this.#token?.value === sent.value) this.#token = undefined
  }

  /** resumes a session on start (page load in cookie mode, a stored token in body mode); false when there is none */
  async restore (): Promise<boolean> {
    const token = this.#token
    if (token !== undefined && !this.#stale(token)) return true
    try {
      await this.#refresh(token?.value, this.#status === 'ended')
      return true
    } catch (err) {
      if (err instanceof SessionEndedError) return false
      throw err
    }
  }

  /** a refresh now, even if the token is fresh (new scopes or claims); resumes an ended session if the cookie/store allows */
  async refresh (): Promise<AccessToken> {
    return await this.#refresh(this.#token?.value, true)
  }

  async login (username: string, password: string): Promise<AccessToken> {
    return await this.#coord.withLock(async () => {
      const answer = await this.#o.api.login(username, password)
      if (this.#o.store !== undefined && answer.refreshToken !== undefined) await this.#o.store.set(answer.refreshToken)
      this.#install(answer.accessToken, 'login')
      return answer.accessToken
    })
  }

  /**
   * Ends the session here and at the gateway. Local state is cleared even when the request
   * fails (the user asked to leave); the failure is then rethrown. In cookie mode a failed
   * request leaves the cookie valid, so a later restore() could resume the session.
   */
  async logout (): Promise<void> {
    let failure: unknown
    await this.#coord.withLock(async () => {
      const access = this.#token !== undefined && !isExpired(this.#token, this.#o.now) ? this.#token.value : undefined
      const refreshToken = await this.#o.store?.get()
      if (this.#o.transport === 'cookie' || refreshToken !== undefined || access !== undefined) {
        try {
          await this.#o.api.logout(refreshToken, access)
        } catch (err) {
          failure = err
        }
      }
      await this.#o.store?.clear()
      this.#end(SessionEndReason.logout, false)
    })
    if (failure !== undefined) throw failure
  }

  /** every session of the user, on every device; needs a valid access token (refreshed first if due) */
  async logoutAll (): Promise<void> {
    const token = await this.current()
    await this.#coord.withLock(async () => {
      await this.#o.api.logoutAll(token.value)
      await this.#o.store?.clear()
      this.#end(SessionEndReason.logoutAll, false)
    })
  }

  close (): void {
    this.#closed = true
    this.#disarm()
    this.#coord.close()
  }

  #stale (token: AccessToken): boolean {
    return needsRefresh(token, this.#o.now, this.#o.refreshMarginMs)
  }

  /** single flight: every caller in this tab shares one refresh */
  #refresh (stale: string | undefined, force: boolean): Promise<AccessToken> {
    this.#inflight ??= this.#refreshUnderLock(stale, force).finally(() => { this.#inflight = undefined })
    return this.#inflight
  }

  async #refreshUnderLock (stale: string | undefined, force: boolean): Promise<AccessToken> {
    return await this.#coord.withLock(async (contended) => {
      /** a token newer than the one that prompted this refresh, and not itself due */
      const fresher = (): AccessToken | undefined => {
        const t = this.#token
        return t !== undefined && t.value !== stale && !this.#stale(t) ? t : undefined
      }
      if (!force) {
        // whoever held the lock has probably just refreshed (or ended the session): wait for its news
        if (contended) await this.#coord.awaitNews(() => fresher() !== undefined || this.#status === 'ended')
        const adopted = fresher()
        if (adopted !== undefined) return adopted
        if (this.#status === 'ended') throw new SessionEndedError(this.#endReason)
      }
      const store = this.#o.store
      const refreshToken = await store?.get()
      if (store !== undefined && refreshToken === undefined) throw this.#end(SessionEndReason.noSession, false)
      let answer
      try {
        answer = await this.#o.api.refresh(refreshToken)
      } catch (err) {
        if (err instanceof SessionEndedError) {
          await store?.clear()
          throw this.#end(err.reason, false, err)
        }
        // cookie mode: 400 bad_request is "no refresh token was presented" — no cookie, no session
        if (this.#o.transport === 'cookie' && err instanceof PortcullisError && err.status === 400 && err.code === 'bad_request') {
          throw this.#end(SessionEndReason.noSession, false)
        }
        throw err // network, timeout, 5xx: see the header comment
      }
      // stored before use: if the store fails, the rotation is redone within the grace window
      if (store !== undefined && answer.refreshToken !== undefined) await store.set(answer.refreshToken)
      this.#install(answer.accessToken, 'refresh')
      return answer.accessToken
    })
  }

  #install (token: AccessToken, source: TokenChangedEvent['source']): void {
    this.#token = token
    this.#status = 'active'
    if (source !== 'other_tab') {
      this.#coord.post({ v: 1, type: 'token', accessToken: token.value, expiresAtMs: token.expiresAtMs, lifetimeMs: token.lifetimeMs })
    }
    this.#arm()
    this.#o.events.emit('tokenChanged', { source, expiresAtMs: token.expiresAtMs })
  }

  /** the session is over: forget the token, tell the other tabs, fire `sessionEnded` once */
  #end (reason: SessionEndReason, fromOtherTab: boolean, cause?: SessionEndedError): SessionEndedError {
    const was = this.#status
    const sid = sidOf(this.#token)
    this.#token = undefined
    this.#status = 'ended'
    this.#endReason = reason
    this.#disarm()
    if (!fromOtherTab) this.#coord.post({ v: 1, type: 'ended', reason, sid })
    if (was !== 'ended') this.#o.events.emit('sessionEnded', { reason, fromOtherTab })
    return cause ?? new SessionEndedError(reason)
  }

  #onMessage (m: CrossTabMessage): void {
    if (this.#closed) return
    if (m.type === 'ended') {
      // late news of a session this tab has already left for a new one (a login crossed it)
      const ours = sidOf(this.#token)
      if (m.sid !== undefined && ours !== undefined && m.sid !== ours) return
      if (this.#status !== 'ended') this.#end(END_REASONS.has(m.reason) ? m.reason as SessionEndReason : SessionEndReason.invalidGrant, true)
      return
    }
    const current = this.#token
    if (current?.value === m.accessToken) return
    // news older than what we hold (messages may cross): keep ours
    if (current?.expiresAtMs !== undefined && m.expiresAtMs !== undefined && m.expiresAtMs <= current.expiresAtMs) return
    this.#install({ value: m.accessToken, expiresAtMs: m.expiresAtMs, lifetimeMs: m.lifetimeMs }, 'other_tab')
  }

  /** autoRefresh: wake up when the margin is reached (timers are throttled in background tabs; current() still checks) */
  #arm (delayMs?: number): void {
    this.#disarm()
    const token = this.#token
    if (!this.#o.autoRefresh || this.#closed || token?.expiresAtMs === undefined) return
    const due = token.expiresAtMs - marginMs(token, this.#o.refreshMarginMs) - this.#o.now()
    this.#timer = this.#o.timers.setTimeout(() => {
      this.#timer = undefined
      this.#background().catch(() => {}) // it handles its own failures
    }, Math.max(0, delayMs ?? due))
    unrefTimer(this.#timer)
  }

  #disarm (): void {
    if (this.#timer !== undefined) this.#o.timers.clearTimeout(this.#timer)
    this.#timer = undefined
  }

  async #background (): Promise<void> {
    const token = this.#token
    if (this.#closed || this.#status !== 'active' || token === undefined) return
    try {
      await this.#refresh(token.value, false)
    } catch (err) {
      const still = this.#token
      if (!(err instanceof SessionEndedError) && still !== undefined && !isExpired(still, this.#o.now)) this.#arm(BACKGROUND_RETRY_MS)
    }
  }
}
