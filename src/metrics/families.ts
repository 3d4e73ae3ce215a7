import type { Aggregator, Metric, Registry } from 'prom-client'

/**
 * The two metric families the request path touches, kept lean: a cell per label set, built
 * once and cached by its caller, whose `observe`/`inc` is a few number writes — no label
 * object, no hash string, no allocation. prom-client's own children rebuild a label hash on
 * every call (≈ 0.3–0.7 µs per observe here, bench/micro-metrics.ts), which a proxy doing
 * ~60 µs of work per request would feel. Everything else — registry, text format, HELP/TYPE,
 * escaping, content type, the cluster aggregator — is prom-client's: these objects answer
 * `get()` the way its metrics do, so `Registry` and `AggregatorRegistry` take them as they are.
 */

type Labels = Record<string, string>
interface Sample { value: number, labels: Labels, metricName?: string }
interface Snapshot { name: string, help: string, type: 'histogram' | 'counter', aggregator: Aggregator, values: Sample[] }

abstract class Family<Cell> {
  readonly name: string
  readonly help: string
  abstract readonly type: 'histogram' | 'counter'
  readonly aggregator: Aggregator = 'sum'
  readonly labelNames: readonly string[]
  /** every cell, by its label values joined with NUL (for export and so a label set has one cell) */
  protected readonly cells = new Map<string, Cell>()

  constructor (registry: Registry, name: string, help: string, labelNames: readonly string[]) {
    this.name = name
    this.help = help
    this.labelNames = labelNames
    // these are not prom-client classes, but answer the same get()/reset() the registry calls
    registry.registerMetric(this as unknown as Metric)
  }

  /** the cell of these label values (in labelNames order); callers keep it instead of asking again */
  cell (...values: string[]): Cell {
    if (values.length !== this.labelNames.length) throw new TypeError(`${this.name} takes labels ${this.labelNames.join(', ')}`)
    const key = values.join('\u0000')
    let cell = this.cells.get(key)
    if (cell === undefined) {
      const labels: Labels = {}
      for (let i = 0; i < values.length; i++) labels[this.labelNames[i]!] = values[i]!
      cell = this.newCell(labels)
      this.cells.set(key, cell)
    }
    return cell
  }

  protected abstract newCell (labels: Labels): Cell
  protected abstract samples (): Sample[]

  // async like prom-client's, which the registry awaits
  async get (): Promise<Snapshot> {
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values: this.samples() }
  }

  abstract reset (): void
}

export class HistogramCell {
  readonly labels: Labels
  readonly #bounds: Float64Array
  /** per bucket (not cumulative); the last one is +Inf */
  readonly counts: Float64Array
  sum = 0
  count = 0

  constructor (labels: Labels, bounds: Float64Array) {
    this.labels = labels
    this.#bounds = bounds
    this.counts = new Float64Array(bounds.length + 1)
  }

  observe (value: number): void {
    const bounds = this.#bounds
    let i = 0
    // linear: a dozen bounds, and most values land in the first few
    while (i < bounds.length && value > bounds[i]!) i++
    this.counts[i]!++
    this.sum += value
    this.count++
  }
}

export class HistogramFamily extends Family<HistogramCell> {
  readonly type = 'histogram' as const
  readonly #bounds: Float64Array

  constructor (registry: Registry, options: { name: string, help: string, labelNames: readonly string[], buckets: readonly number[] }) {
    super(registry, options.name, options.help, options.labelNames)
    const sorted = [...options.buckets].sort((a, b) => a - b)
    this.#bounds = Float64Array.from(sorted)
  }

  protected newCell (labels: Labels): HistogramCell {
    return new HistogramCell(labels, this.#bounds)
  }

  protected samples (): Sample[] {
    const out: Sample[] = []
    const bucket = `${this.name}_bucket`
    for (const cell of this.cells.values()) {
      let acc = 0
      for (let i = 0; i < this.#bounds.length; i++) {
        acc += cell.counts[i]!
        out.push({ value: acc, labels: { ...cell.labels, le: String(this.#bounds[i]) }, metricName: bucket })
      }
      out.push({ value: cell.count, labels: { ...cell.labels, le: '+Inf' }, metricName: bucket })
      out.push({ value: cell.sum, labels: cell.labels, metricName: `${this.name}_sum` })
      out.push({ value: cell.count, labels: cell.labels, metricName: `${this.name}_count` })
    }
    return out
  }

  reset (): void {
    for (const cell of this.cells.values()) { cell.counts.fill(0); cell.sum = 0; cell.count = 0 }
  }
}

export class CounterCell {
  readonly labels: Labels
  value = 0

  constructor (labels: Labels) { this.labels = labels }

  inc (by = 1): void { this.value += by }
}

export class CounterFamily extends Family<CounterCell> {
  readonly type = 'counter' as const

  constructor (registry: Registry, options: { name: string, help: string, labelNames: readonly string[] }) {
    super(registry, options.name, options.help, options.labelNames)
  }

  protected newCell (labels: Labels): CounterCell {
    return new CounterCell(labels)
  }

  protected samples (): Sample[] {
    const out: Sample[] = []
    for (const cell of this.cells.values()) out.push({ value: cell.value, labels: cell.labels })
    return out
  }

  reset (): void {
    for (const cell of this.cells.values()) cell.value = 0
  }
}
