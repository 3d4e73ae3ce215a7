/**
 * Longest-prefix routing by whole path segments, case-insensitive (so `/API/Admin` cannot
 * slip past a guard on `/api/admin`). One Map lookup per segment of the request path, so
 * the cost does not grow with the number of routes, and an entry is what the caller makes
 * of a route at boot, not a router node per method.
 */
export class RouteTable<T> {
  readonly #byPrefix = new Map<string, T>()

  /** `prefix` as configured: `/` or `/a/b` without a trailing slash */
  add (prefix: string, entry: T): void {
    this.#byPrefix.set(prefix === '/' ? '' : prefix.toLowerCase(), entry)
  }

  /** the entry whose prefix is the longest whole-segment prefix of the URL's path */
  match (url: string): T | undefined {
    const q = url.indexOf('?')
    let path = (q === -1 ? url : url.slice(0, q)).toLowerCase()
    for (;;) {
      const hit = this.#byPrefix.get(path)
      if (hit !== undefined) return hit
      if (path === '') return undefined
      path = path.slice(0, path.lastIndexOf('/'))
    }
  }

  get size (): number { return this.#byPrefix.size }
}
