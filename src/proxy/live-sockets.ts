import { MAX_TIMER_MS } from '../config/duration.js'
import type { Denylist } from '../pipeline/denylist.js'
import type { VerifiedToken } from '../tokens/verified-token.js'

/** RFC 6455 §7.4.1: 1008 policy violation — what admitted the socket no longer holds */
export const CLOSE_POLICY_VIOLATION = 1008

/** what a configuration says of an open socket: the reload's checks (see `reload`) */
export interface SocketPolicy {
  /** verifies a token's text (the configuration's TokenVerifier) */
  verify: (token: string, nowMs: number) => VerifiedToken | Promise<VerifiedToken>
  /** why the configuration no longer admits a socket on `url` opened with `token` (undefined: anonymous); undefined when it does */
  refusal: (url: string, token: VerifiedToken | undefined) => string | undefined
}

interface Live {
  /** the handshake's request target: the route it matches is looked up again on reload */
  url: string
  /** the socket's token as the configuration in force verified it (replaced by `reload`); undefined: anonymous */
  token: VerifiedToken | undefined
  close: (code: number, reason: string) => void
  /** the token's expiry (exp + clock skew); undefined: anonymous */
  timer: NodeJS.Timeout | undefined
  /** the configuration (`configured`) that admitted it or last checked it */
  generation: number
}

/** a configuration's checks, with its place in the order of configurations */
interface Check { generation: number, policy: SocketPolicy }

/**
 * The WebSockets open through the gateway, closed by it (1008) when what admitted them stops
 * holding (oauth2-proxy#2996 asks for this; no gateway in the field does it):
 * - its token expires: one timer per authenticated socket;
 * - its token is revoked: checked against the denylist whenever it changes (a revocation
 *   through any replica reaches this one through the feed), so a logout closes the user's
 *   sockets within the feed's latency;
 * - its identity provider withdraws the key that signed its token (`recheck`, on the key
 *   set's change): HTTP requests with it are refused from then on, so its sockets end too
 *   (fix-websocket-outlives-withdrawn-key);
 * - a reload no longer admits it (`reload`): its token's issuer, key, audience or algorithm
 *   is no longer trusted, or the route its path now matches is gone, refuses WebSockets,
 *   wants a token it has not got or scopes its token lacks (fix-websocket-outlives-tightened-route).
 *   A handshake admitted under the old configuration that completes after the reload's check
 *   is checked by the new configuration as it opens (fix-websocket-handshake-straddles-reload).
 */
export class LiveSockets {
  readonly #live = new Set<Live>()
  readonly #denylist: Denylist
  readonly #clock: () => number
  readonly #unsubscribe: () => void
  #generations = 0
  /** the newest configuration's checks (`reload`) */
  #checked: Check | undefined

  constructor (denylist: Denylist, clock: () => number) {
    this.#denylist = denylist
    this.#clock = clock
    this.#unsubscribe = denylist.onChange(() => { this.recheck() })
  }

  /**
   * A number for a new configuration, newer than every one before: what its WebSocket routes
   * pass to `add`, and its reload to `reload`.
   */
  configured (): number {
    return ++this.#generations
  }

  /**
   * Tracks a socket admitted by configuration `generation`; returns the function that forgets
   * it (call it when the socket closes). A socket admitted by a configuration a reload has
   * since replaced and checked (its upstream handshake was still under way) is checked by the
   * newer one now, as the reload checked the sockets open then.
   */
  add (url: string, token: VerifiedToken | undefined, close: (code: number, reason: string) => void, generation: number): () => void {
    const live: Live = { url, token, close, timer: undefined, generation }
    this.#expireAt(live)
    this.#live.add(live)
    // revoked, or its key withdrawn, while the upstream handshake was under way: `recheck`
    // ran before the socket was here (fix-websocket-revoked-during-handshake)
    const ended = token === undefined ? undefined : this.#ended(token)
    if (ended !== undefined) {
      this.#end(live, ended)
      return () => {}
    }
    const checked = this.#checked
    if (checked !== undefined && checked.generation > generation) this.#check(live, checked).catch(() => {}) // never rejects
    return () => {
      clearTimeout(live.timer)
      this.#live.delete(live)
    }
  }

  get size (): number { return this.#live.size }

  /** the newest configuration (`configured`) whose reload has checked the open sockets; 0 before any reload */
  get checkedGeneration (): number { return this.#checked?.generation ?? 0 }

  /** closes the sockets whose token was revoked or whose signing key was withdrawn */
  recheck (): void {
    for (const live of this.#live) {
      const ended = live.token === undefined ? undefined : this.#ended(live.token)
      if (ended !== undefined) this.#end(live, ended)
    }
  }

  /** why a socket opened with `token` must close now (revoked, key withdrawn); undefined when it may stay */
  #ended (token: VerifiedToken): string | undefined {
    if (this.#denylist.check(token.claims, token.revocationJti) !== undefined) return 'the access token was revoked'
    if (token.key !== undefined && !token.key.alive) return "the access token's signing key was withdrawn"
    return undefined
  }

  /**
   * After a reload to configuration `generation`: every socket checked as its handshake would
   * be under it — its token verified again, then the route its path matches now, with that
   * token. The ones refused are closed; the others keep the new verification (a later key
   * withdrawal in the new key sets reaches them, and the new clock skew times their expiry).
   * A reload older than one already checked changes nothing. Never throws.
   */
  async reload (policy: SocketPolicy, generation: number): Promise<void> {
    if (this.#checked !== undefined && this.#checked.generation >= generation) return
    const check: Check = { generation, policy }
    this.#checked = check
    await Promise.all([...this.#live].map(async (live) => { await this.#check(live, check) }))
  }

  /** one socket against one configuration's checks; never throws (a check that fails closes it) */
  async #check (live: Live, { generation, policy }: Check): Promise<void> {
    let token = live.token
    if (token !== undefined) {
      try {
        token = await policy.verify(token.text, this.#clock())
      } catch {
        // unless closed meanwhile, or admitted since by a newer configuration's check
        if (this.#live.has(live) && live.generation <= generation) this.#end(live, 'the access token is not accepted by the new configuration')
        return
      }
    }
    // closed meanwhile, or already checked by a newer configuration
    if (!this.#live.has(live) || live.generation > generation) return
    let refusal: string | undefined
    try {
      refusal = policy.refusal(live.url, token)
    } catch {
      refusal = 'the new configuration could not be checked'
    }
    if (refusal !== undefined) {
      this.#end(live, refusal)
      return
    }
    live.token = token
    live.generation = generation
    this.#expireAt(live)
  }

  /** (re)starts the socket's expiry timer from its token */
  #expireAt (live: Live): void {
    clearTimeout(live.timer)
    const token = live.token
    if (token === undefined) return
    const delayMs = Math.max(0, token.expMs + token.skewMs - this.#clock())
    // a timer waits at most 2^31 − 1 ms and fires after 1 ms beyond it: a token living longer
    // (an identity provider's, under a long maxTokenLifetime) is re-armed instead of closed
    live.timer = delayMs > MAX_TIMER_MS
      ? setTimeout(() => { this.#expireAt(live) }, MAX_TIMER_MS)
      : setTimeout(() => { this.#end(live, 'the access token expired') }, delayMs)
    live.timer.unref()
  }

  #end (live: Live, reason: string): void {
    clearTimeout(live.timer)
    this.#live.delete(live)
    live.close(CLOSE_POLICY_VIOLATION, reason)
  }

  /** on shutdown: stop following the denylist, close every socket as going away */
  close (): void {
    this.#unsubscribe()
    for (const live of this.#live) {
      clearTimeout(live.timer)
      live.close(1001, 'the gateway is shutting down')
    }
    this.#live.clear()
  }
}
