/**
 * The bytes of request bodies a process holds while it reads them whole before forwarding
 * (routes[].requestBuffering): at most server.requestBufferBytes at once. Bytes are counted as
 * they arrive, never as declared, so a client that announces a large body and sends nothing
 * takes nothing from the others. One budget per configuration, shared by its routes: a reload
 * starts a new count while the requests of the configuration before finish on theirs.
 */
export class BodyBudget {
  #held = 0
  constructor (readonly limitBytes: number) {}

  /** counts `n` more bytes; false (nothing counted) if they would pass the limit */
  take (n: number): boolean {
    if (this.#held + n > this.limitBytes) return false
    this.#held += n
    return true
  }

  /** gives back bytes taken before */
  give (n: number): void { this.#held -= n }

  /** bytes held now */
  get heldBytes (): number { return this.#held }
}
