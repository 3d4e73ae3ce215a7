/**
 * A request's method as the decision log and the spans take it. HTTP/1.1's parser knows a
 * fixed list of methods, but over HTTP/2 `:method` is any token the client chooses, of any
 * length (an 8,000-character one was a 405 with an 8,231-character decision line and an 8 KB
 * span name: fix-h2-method-in-logs). Tokens hold no `"` or `\` (RFC 9110 §5.6.2, enforced by
 * nghttp2 and llhttp), so the capped method needs no escaping in hand-built JSON.
 */
export const MAX_METHOD_CHARS = 32

/** the method, cut to MAX_METHOD_CHARS (as src/pipeline/pipeline.ts quotes it in its 405 message) */
export function cappedMethod (method: string): string {
  return method.length <= MAX_METHOD_CHARS ? method : method.slice(0, MAX_METHOD_CHARS)
}
