/**
 * What the SDK needs from its host, as small structural types, and the feature checks
 * that find them. The SDK runs in browsers (ES2022 modules) and in Node >= 20 with no
 * `node:` import and no DOM typings: APIs missing on one side (Web Locks in Node 20,
 * WebSocket in Node 20, BroadcastChannel in old Safari) are looked up on globalThis and
 * may always be injected instead.
 */

/** epoch-like milliseconds; only differences are used (see token.ts) */
export type Clock = () => number

export interface Timers {
  setTimeout: (callback: () => void, delayMs: number) => unknown
  clearTimeout: (handle: unknown) => void
}

/** the subset of the Web Locks API used (https://w3c.github.io/web-locks/) */
export interface LockOptionsLike {
  mode?: 'exclusive'
  /** grant only if free now; the callback then gets `null` when it is not */
  ifAvailable?: boolean
}
export interface LockManagerLike {
  request: <T>(name: string, options: LockOptionsLike, callback: (lock: unknown) => T | Promise<T>) => Promise<T>
}

/**
 * The subset of BroadcastChannel used; `unref` is Node's (keeps a CLI from hanging on exit).
 * `onmessage` is only ever assigned, so its parameter is `never`: browsers' and Node's
 * channels (whose handlers take MessageEvent) both fit.
 */
export interface BroadcastChannelLike {
  onmessage: ((event: never) => void) | null
  postMessage: (message: unknown) => void
  close: () => void
  unref?: () => void
}
export type BroadcastChannelFactory = (name: string) => BroadcastChannelLike

/** the subset of a WebSocket used: browsers' WebSocket and the `ws` package both fit */
export interface WebSocketCloseEventLike {
  code: number
  reason: string
}
export interface WebSocketLike {
  readonly protocol: string
  close: (code?: number, reason?: string) => void
  addEventListener: (type: 'close', listener: (event: WebSocketCloseEventLike) => void) => void
}
export type WebSocketConstructorLike = new (url: string, protocols?: string | string[]) => WebSocketLike

export type FetchLike = (input: string | URL | Request, init?: RequestInit) => Promise<Response>

const host = globalThis as unknown as {
  navigator?: { locks?: Partial<LockManagerLike> }
  BroadcastChannel?: new (name: string) => BroadcastChannelLike
  WebSocket?: WebSocketConstructorLike
  location?: { origin?: string }
}

/** Web Locks where the platform has them (secure browser contexts; not Node 20) */
export function platformLocks (): LockManagerLike | undefined {
  const locks = host.navigator?.locks
  return typeof locks?.request === 'function' ? locks as LockManagerLike : undefined
}

export function platformBroadcastChannel (): BroadcastChannelFactory | undefined {
  const Ctor = host.BroadcastChannel
  return typeof Ctor === 'function' ? (name) => new Ctor(name) : undefined
}

export function platformWebSocket (): WebSocketConstructorLike | undefined {
  return typeof host.WebSocket === 'function' ? host.WebSocket : undefined
}

/** the page's origin in a browser; undefined in Node */
export function pageOrigin (): string | undefined {
  const origin = host.location?.origin
  return typeof origin === 'string' && origin !== 'null' ? origin : undefined
}

export const defaultTimers: Timers = {
  setTimeout: (callback, delayMs) => globalThis.setTimeout(callback, delayMs),
  clearTimeout: (handle) => { globalThis.clearTimeout(handle as Parameters<typeof globalThis.clearTimeout>[0]) },
}

/** Node timers keep the process alive; a background refresh must not (browsers have no unref) */
export function unrefTimer (handle: unknown): void {
  const h = handle as { unref?: () => void } | null
  if (typeof h?.unref === 'function') h.unref()
}
