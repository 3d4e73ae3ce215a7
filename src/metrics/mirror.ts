/**
 * Turns a figure a component counts from zero into increments of a monotonic counter. The
 * component may be replaced (a reload builds a new verifier; a changed issuer a new key set),
 * and the new one counts from zero again: keyed by the component object, each is followed
 * on its own, and what one counted before it was replaced stays in the counter. A figure
 * that goes down under the same key is a restart, and counts whole.
 */
export class Mirror {
  readonly #byObject = new WeakMap<object, number>()
  readonly #byName = new Map<string, number>()

  /** how much `current` grew since the last call for `source` */
  delta (source: object | string, current: number): number {
    const last = typeof source === 'string' ? this.#byName.get(source) : this.#byObject.get(source)
    if (typeof source === 'string') this.#byName.set(source, current)
    else this.#byObject.set(source, current)
    if (last === undefined || current < last) return current
    return current - last
  }
}
