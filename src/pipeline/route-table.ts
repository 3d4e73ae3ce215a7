/**
 * Longest-prefix routing by whole path segments, case-insensitive (so `/API/Admin` cannot
 * slip past a guard on `/api/admin`). One Map lookup per segment of the request path, so
 * the cost does not grow with the number of routes, and an entry is what the caller makes
 * of a route at boot, not a router node per method.
 */
export class RouteTable<T> {
  readonly #byPrefix = new Map<string, T>()
  /** segments in the deepest prefix: no prefix is longer, so no longer path is looked up */
  #maxDepth = 0

  /** `prefix` as configured: `/` or `/a/b` without a trailing slash */
  add (prefix: string, entry: T): void {
    const key = prefix === '/' ? '' : prefix.toLowerCase()
    this.#byPrefix.set(key, entry)
    this.#maxDepth = Math.max(this.#maxDepth, key.split('/').length - 1)
  }

  /**
   * The entry whose prefix is the longest whole-segment prefix of the URL's path. The path is
   * cut after as many segments as the deepest prefix has before it is lowercased and looked up:
   * a lookup per segment of the whole path cost the square of its length (each a new string,
   * hashed whole), before any token was read — 4,000 segments took 22 ms a match, and one
   * client kept a core busy (fix-route-match-quadratic).
   */
  match (url: string): T | undefined {
    const q = url.indexOf('?')
    const end = q === -1 ? url.length : q
    // the slash that would begin segment maxDepth + 1 (the path's first character is its first slash)
    let cut = end
    for (let n = 0, from = 0; n <= this.#maxDepth; n++) {
      const slash = url.indexOf('/', from)
      if (slash === -1 || slash >= end) { cut = end; break }
      cut = slash
      from = slash + 1
    }
    let path = url.slice(0, cut).toLowerCase()
    for (;;) {
      const hit = this.#byPrefix.get(path)
      if (hit !== undefined) return hit
      if (path === '') return undefined
      path = path.slice(0, path.lastIndexOf('/'))
    }
  }

  get size (): number { return this.#byPrefix.size }
}
