/**
 * One API request through the gateway: where it may go, how the token is added, and
 * whether it can be sent a second time after a refresh.
 */
import type { AccessToken } from './token.js'

export type RequestInput = string | URL | Request

export const isRequest = (x: unknown): x is Request => typeof Request !== 'undefined' && x instanceof Request

/**
 * A body that can be sent twice. Strings, URLSearchParams, FormData, Blob and buffers are
 * re-serialized by fetch each time; a ReadableStream (or a Node stream or async iterable)
 * is consumed by the first send, and so is a Request object's own body (a stream we
 * could only rewind by buffering it in full).
 */
export function isReplayable (input: RequestInput, init: RequestInit): boolean {
  if (init.body === undefined || init.body === null) return !isRequest(input) || input.body === null || init.body === null
  if (typeof init.body === 'string') return true
  const b = init.body as { getReader?: unknown, pipe?: unknown, [Symbol.asyncIterator]?: unknown }
  return typeof b.getReader !== 'function' && typeof b.pipe !== 'function' && typeof b[Symbol.asyncIterator] !== 'function'
}

/** `input` + `init` with `Authorization: Bearer`, the caller's other headers kept */
export function withBearer (input: RequestInput, url: URL, init: RequestInit, token: AccessToken): [string | Request, RequestInit | undefined] {
  const headers = new Headers(isRequest(input) ? input.headers : undefined)
  if (init.headers !== undefined) new Headers(init.headers).forEach((value, name) => { headers.set(name, value) })
  headers.set('authorization', `Bearer ${token.value}`)
  return isRequest(input) ? [new Request(input, { ...init, headers }), undefined] : [url.href, { ...init, headers }]
}

/** waits for `promise` unless the caller's signal aborts first (the promise itself goes on: it may be shared) */
export function abortable<T> (promise: Promise<T>, signal: AbortSignal | null | undefined): Promise<T> {
  if (signal === null || signal === undefined) return promise
  if (signal.aborted) return Promise.reject(signal.reason)
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => { reject(signal.reason) }
    signal.addEventListener('abort', onAbort, { once: true })
    promise.then(
      (value) => { signal.removeEventListener('abort', onAbort); resolve(value) },
      (err: unknown) => { signal.removeEventListener('abort', onAbort); reject(err) })
  })
}
