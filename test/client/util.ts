/** Test utilities with no gateway behind them (units.test.ts imports only these). */

/** the rejection of `promise` (fails loudly if it resolves) */
export async function rejection (promise: Promise<unknown>): Promise<Error & Record<string, unknown>> {
  try {
    await promise
  } catch (err) {
    return err as Error & Record<string, unknown>
  }
  throw new Error('expected a rejection, got a resolution')
}

export async function waitFor (check: () => boolean | Promise<boolean>, timeoutMs = 2000): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await check()) return true
    if (Date.now() > deadline) return false
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

/** timers the test fires by hand (background refresh) */
export interface ManualTimers {
  setTimeout: (callback: () => void, delayMs: number) => unknown
  clearTimeout: (handle: unknown) => void
  /** the armed timers, in order */
  pending: () => Array<{ delayMs: number }>
  /** runs the earliest armed timer */
  fire: () => void
}

export function manualTimers (): ManualTimers {
  let next = 1
  const armed = new Map<number, { callback: () => void, delayMs: number }>()
  return {
    setTimeout: (callback, delayMs) => { const id = next++; armed.set(id, { callback, delayMs }); return id },
    clearTimeout: (handle) => { armed.delete(handle as number) },
    pending: () => [...armed.values()].map(({ delayMs }) => ({ delayMs })),
    fire: () => {
      const [id, timer] = [...armed].sort(([, a], [, b]) => a.delayMs - b.delayMs)[0] ?? []
      if (id === undefined || timer === undefined) throw new Error('no timer armed')
      armed.delete(id)
      timer.callback()
    },
  }
}
