/** the longest a Node timer waits: setTimeout's own limit (2^31 − 1 ms, ~24.8 days); beyond it, it fires after 1 ms */
export const MAX_TIMER_MS = 2_147_483_647

const UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const

/** `10m` → 600000; a bare number is seconds. Input was validated by the schema. */
export function durationMs (value: string | number): number {
  if (typeof value === 'number') return Math.round(value * 1000)
  const match = /^([0-9]+)(ms|s|m|h|d)$/.exec(value)
  if (match === null) throw new TypeError(`not a duration: ${value}`)
  return Number(match[1]) * UNIT_MS[match[2] as keyof typeof UNIT_MS]
}

export function durationSec (value: string | number): number {
  return Math.floor(durationMs(value) / 1000)
}
