import type { Denylist } from '../pipeline/denylist.js'
import type { VerifiedToken } from '../tokens/verified-token.js'

/** RFC 6455 §7.4.1: 1008 policy violation — the token that opened the socket no longer holds */
export const CLOSE_POLICY_VIOLATION = 1008

interface Live {
  token: VerifiedToken
  close: (code: number, reason: string) => void
  timer: NodeJS.Timeout
}

/**
 * Authenticated WebSockets, closed by the gateway (1008) when the token they were opened
 * with expires or is revoked (oauth2-proxy#2996 asks for this; no gateway in the field does
 * it). Expiry is one timer per socket; revocation is checked against the denylist whenever
 * it changes (a revocation through any replica reaches this one through the feed), so a
 * logout closes the user's sockets within the feed's latency.
 */
export class LiveSockets {
  readonly #live = new Set<Live>()
  readonly #denylist: Denylist
  readonly #clock: () => number
  readonly #unsubscribe: () => void

  constructor (denylist: Denylist, clock: () => number) {
    this.#denylist = denylist
    this.#clock = clock
    this.#unsubscribe = denylist.onChange(() => { this.#checkRevocations() })
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

  #checkRevocations (): void {
    for (const live of this.#live) {
      if (this.#denylist.check(live.token.claims, live.token.revocationJti) !== undefined) this.#end(live, 'the access token was revoked')
    }
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
