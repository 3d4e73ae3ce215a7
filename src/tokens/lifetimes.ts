/**
 * The longest lifetime (`exp − iat`) of the gateway's own access tokens, over the
 * configurations it has run since it started. A reload that shortens `tokens.accessTokenTtl`
 * (and with it the default `maxTokenLifetime`) must not refuse the tokens it issued a minute
 * before: they were signed under the longer limit and carry it in their own `exp`. So a token
 * issued (`iat`) at or before a reload is held to the limit in force then, while such a token
 * can still be valid; tokens issued after it get the new limit (fix-reload-shortened-ttl).
 *
 * Held in memory, beside the other state that outlives a configuration (runtime.ts `Shared`):
 * a restart starts from its own configuration alone (README "Live configuration changes").
 * The relaxation buys a holder of the signing key nothing past what the old limit gave: an
 * era ends once every token it admits has expired.
 */
export class LifetimeHistory {
  /** tokens with `iat <= untilSec` may live up to `maxSec` */
  #eras: ReadonlyArray<{ untilSec: number, maxSec: number }> = []
  #currentSec: number | undefined

  /** a configuration takes over at `nowSec` with its own limit */
  apply (maxSec: number, nowSec: number, skewSec: number): void {
    const eras = this.#currentSec !== undefined && this.#currentSec > maxSec
      ? [...this.#eras, { untilSec: nowSec, maxSec: this.#currentSec }]
      : this.#eras
    this.#eras = eras.filter(e => e.maxSec > maxSec && e.untilSec + e.maxSec + skewSec >= nowSec)
    this.#currentSec = maxSec
  }

  /** whether a token issued at `iatSec` that lives `lifetimeSec` was within the limit of its time */
  allowedEarlier (iatSec: number, lifetimeSec: number): boolean {
    for (const e of this.#eras) if (iatSec <= e.untilSec && lifetimeSec <= e.maxSec) return true
    return false
  }
}
