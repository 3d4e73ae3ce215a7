import { Pool } from 'undici'

// below common upstream keep-alive timeouts (Node's 5 s), so the pool never reuses a socket
// the upstream is closing (TOOLCHAIN: undici pool tips)
const UPSTREAM_KEEP_ALIVE_MS = 4000

/**
 * One keep-alive undici Pool per upstream origin, shared by every route that uses it and
 * kept across config reloads (a reload does not drop a single upstream connection). Each
 * pool counts the requests it carries, so a route can refuse to queue more than its
 * `queueLimit` behind busy connections (503 upstream_busy) instead of letting an unbounded
 * queue grow while slow clients hold every connection (issue 8, item 7).
 */
export class UpstreamPool {
  readonly origin: string
  readonly connections: number
  readonly dispatcher: Pool
  /** requests dispatched and not finished */
  inFlight = 0

  constructor (origin: string, connections: number) {
    this.origin = origin
    this.connections = connections
    this.dispatcher = new Pool(origin, {
      connections,
      pipelining: 1,
      keepAliveTimeout: UPSTREAM_KEEP_ALIVE_MS,
      keepAliveMaxTimeout: UPSTREAM_KEEP_ALIVE_MS,
      // the gateway times requests itself, from the moment it accepted them (exchange.ts)
      headersTimeout: 0,
      bodyTimeout: 0,
    })
  }

  /** requests waiting for a connection (the pool's connections are all busy) */
  get waiting (): number {
    return this.inFlight > this.connections ? this.inFlight - this.connections : 0
  }
}

export class PoolRegistry {
  readonly #pools = new Map<string, UpstreamPool>()

  /** the pool for an origin; its size is the largest any route asks for */
  get (origin: string, connections: number): UpstreamPool {
    const key = `${origin} ${connections}`
    let pool = this.#pools.get(key)
    if (pool === undefined) {
      pool = new UpstreamPool(origin, connections)
      this.#pools.set(key, pool)
    }
    return pool
  }

  /** closes the pools no route uses any more, once their requests are done */
  async retain (used: ReadonlySet<UpstreamPool>): Promise<void> {
    const closing: Array<Promise<void>> = []
    for (const [key, pool] of this.#pools) {
      if (used.has(pool)) continue
      this.#pools.delete(key)
      closing.push(pool.dispatcher.close())
    }
    await Promise.all(closing)
  }

  async close (): Promise<void> {
    await Promise.all([...this.#pools.values()].map(p => p.dispatcher.close()))
    this.#pools.clear()
  }
}
