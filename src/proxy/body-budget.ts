/** The bytes of request bodies held by a process now (one per process, shared by its configurations). */
export class HeldBodyBytes {
  bytes = 0
}

/**
 * The bytes of request bodies a process holds while it reads them whole before forwarding
 * (routes[].requestBuffering): at most server.requestBufferBytes at once. Bytes are counted as
 * they arrive, never as declared, so a client that announces a large body and sends nothing
 * takes nothing from the others. One budget per configuration, its limit that configuration's;
 * the count is the process's (`held`), so requests of the configuration before a reload still
 * count against the one after it (portcullis_request_body_buffer_bytes reads it).
 */
export class BodyBudget {
  constructor (readonly limitBytes: number, readonly held: HeldBodyBytes = new HeldBodyBytes()) {}

  /** counts `n` more bytes; false (nothing counted) if they would pass the limit */
  take (n: number): boolean {
    if (this.held.bytes + n > this.limitBytes) return false
    this.held.bytes += n
    return true
  }

  /** gives back bytes taken before */
  give (n: number): void { this.held.bytes -= n }
}
