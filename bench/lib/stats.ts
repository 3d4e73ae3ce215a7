/** Small statistics for noisy machines: medians and paired ratios. */

export function median (xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[mid] as number : ((s[mid - 1] as number) + (s[mid] as number)) / 2
}

export function min (xs: readonly number[]): number { return xs.length === 0 ? NaN : Math.min(...xs) }
export function max (xs: readonly number[]): number { return xs.length === 0 ? NaN : Math.max(...xs) }

export interface Timed {
  /** position of the run in the schedule (0, 1, 2, …) */
  seq: number
}

/**
 * The anchor run nearest in the schedule to `run` (ties: the earlier one).
 * Speed drifts by tens of percent between minutes on these machines; a ratio against
 * the anchor measured seconds before or after cancels most of that drift.
 */
export function nearest<T extends Timed> (run: Timed, anchors: readonly T[]): T | undefined {
  let best: T | undefined
  for (const a of anchors) {
    if (best === undefined || Math.abs(a.seq - run.seq) < Math.abs(best.seq - run.seq)) best = a
  }
  return best
}

/** the geometric mean: the mean of ratios that reads the same whichever way they are taken */
export function geometricMean (xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  let sum = 0
  for (const x of xs) sum += Math.log(x)
  return Math.exp(sum / xs.length)
}

/**
 * A 95 % percentile-bootstrap interval of the geometric mean: the pairs resampled with
 * replacement `resamples` times. The generator is seeded (Park–Miller), so the same runs
 * always give the same interval.
 */
export function bootstrapInterval (xs: readonly number[], resamples = 4000, seed = 7): [number, number] {
  if (xs.length === 0) return [NaN, NaN]
  let state = seed
  const next = (): number => { state = (state * 16807) % 2147483647; return state / 2147483647 }
  const means: number[] = []
  for (let k = 0; k < resamples; k++) {
    const sample = xs.map(() => xs[Math.floor(next() * xs.length)] as number)
    means.push(geometricMean(sample))
  }
  means.sort((a, b) => a - b)
  return [means[Math.floor(resamples * 0.025)] as number, means[Math.ceil(resamples * 0.975) - 1] as number]
}
