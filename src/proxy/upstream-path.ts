/**
 * Where a request goes on the upstream: the route's prefix replaced by its rewritePrefix,
 * the rest of the path and the query kept byte for byte (the path was checked by
 * checkPath before routing, so what was authorized is what is forwarded). Built once per
 * route at boot. Same rules as @fastify/http-proxy's: a rewritePrefix's trailing slash is
 * dropped, an empty result is `/`.
 */
export class UpstreamPath {
  readonly #prefixLength: number
  readonly #base: string
  readonly #prefix: string

  constructor (prefix: string, rewritePrefix: string) {
    // the router matched the prefix case-insensitively; its length in the request URL is the
    // same (checkPath refuses encoded letters, so a matched prefix is the prefix in some case)
    this.#prefix = prefix === '/' ? '' : prefix
    this.#prefixLength = this.#prefix.length
    this.#base = rewritePrefix.endsWith('/') ? rewritePrefix.slice(0, -1) : rewritePrefix
  }

  /** the upstream request target for a request URL (path and query) this route matched */
  map (url: string): string {
    const dest = this.#base + url.slice(this.#prefixLength)
    return dest === '' || dest.charCodeAt(0) !== 47 /* / */ ? '/' + dest : dest
  }

  /**
   * A Location the upstream sent, as the client must see it: a path under the upstream's
   * rewritePrefix is moved back under the route's prefix. Absolute URLs and other paths pass.
   */
  location (value: string): string {
    if (this.#base === this.#prefix || value.charCodeAt(0) !== 47 || value.charCodeAt(1) === 47) return value
    if (this.#base === '') return this.#prefix + value
    if (!value.startsWith(this.#base)) return value
    const next = value.charCodeAt(this.#base.length)
    // whole segments only: /orders → /api/orders moves /orders/1 and /orders?x, not /ordersx
    if (Number.isNaN(next) || next === 47 || next === 63 /* ? */ || next === 35 /* # */) {
      const moved = this.#prefix + value.slice(this.#base.length)
      if (moved === '' || moved.charCodeAt(0) !== 47) return '/' + moved
      // under the prefix `/`, the upstream's /v1//evil.example would become //evil.example: a
      // path on the upstream's origin turned into another host (browsers drop tabs and line
      // breaks from a URL and read `\` as `/`). Such a value is left as the upstream sent it
      // (fix-location-rewrite-open-redirect)
      return OTHER_HOST.test(moved.replace(URL_IGNORED, '')) ? value : moved
    }
    return value
  }
}

const URL_IGNORED = /[\t\n\r]/g
const OTHER_HOST = /^[/\\][/\\]/
