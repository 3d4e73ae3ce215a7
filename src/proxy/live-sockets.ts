import type { Denylist } from '../pipeline/denylist.js'
import type { VerifiedToken } from '../tokens/verified-token.js'

/** RFC 6455 §7.4.1: 1008 policy violation — the token that opened the socket no longer holds */
export const CLOSE_POLICY_VIOLATION = 1008

/** verifies a token's text against the configuration in force (TokenVerifier) */
export interface Reverifier {
  verify: (token: string, nowMs: number) => VerifiedToken | Promise<VerifiedToken>
}

interface Live {
  /** the socket's token as the configuration in force verified it (replaced by `reverify`) */
  token: VerifiedToken
  close: (code: number, reason: string) => void
  timer: NodeJS.Timeout
}

/**
 * Authenticated WebSockets, closed by the gateway (1008) when the token they were opened
 * with stops holding (oauth2-proxy#2996 asks for this; no gateway in the field does it):
 * - it expires: one timer per socket;
 * - it is revoked: checked against the denylist whenever it changes (a revocation through any
 *   replica reaches this one through the feed), so a logout closes the user's sockets within
 *   the feed's latency;
 * - its identity provider withdraws the key that signed it (`recheck`, on the key set's
 *   change): HTTP requests with it are refused from then on, so its sockets end too
 *   (fix-websocket-outlives-withdrawn-key);
 * - a reload makes it unacceptable (`reverify`): its issuer, key, audience or algorithm is no
 *   longer trusted. Route policy (scopes) is checked at the handshake only.
 */
export class LiveSockets {
  readonly #live = new Set<Live>()
  readonly #denylist: Denylist
  readonly #clock: () => number
  readonly #unsubscribe: () => void

  constructor (denylist: Denylist, clock: () => number) {
    this.#denylist = denylist
    this.#clock = clock
    this.#unsubscribe = denylist.onChange(() => { this.recheck() })
  }

  /** tracks a socket; returns the function that forgets it (call it when the socket closes) */
  add (token: VerifiedToken, close: (code: number, reason: string) => void): () => void {
    const delayMs = Math.max(0, token.expMs + token.skewMs - this.#clock())
    const live: Live = {
      token,
      close,
      timer: setTimeout(() => { this.#end(live, 'the access token expired') }, delayMs),
    }
    live.timer.unref()
    this.#live.add(live)
    return () => {
      clearTimeout(live.timer)
      this.#live.delete(live)
    }
  }

  get size (): number { return this.#live.size }

  /** closes the sockets whose token was revoked or whose signing key was withdrawn */
  recheck (): void {
    for (const live of this.#live) {
      const token = live.token
      if (this.#denylist.check(token.claims, token.revocationJti) !== undefined) this.#end(live, 'the access token was revoked')
      else if (token.key !== undefined && !token.key.alive) this.#end(live, "the access token's signing key was withdrawn")
    }
  }

  /**
   * After a reload: every socket's token verified again by the new configuration; the ones it
   * refuses are closed, the others keep the new verification (so a later key withdrawal in
   * the new configuration's key sets reaches them). Never throws.
   */
  async reverify (verifier: Reverifier): Promise<void> {
    await Promise.all([...this.#live].map(async (live) => {
      try {
        const verified = await verifier.verify(live.token.text, this.#clock())
        if (this.#live.has(live)) live.token = verified
      } catch {
        if (this.#live.has(live)) this.#end(live, 'the access token is not accepted by the new configuration')
      }
    }))
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
