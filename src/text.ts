/**
 * C0 control characters and DEL: what no identifier the gateway stores or forwards may hold
 * (PostgreSQL refuses NUL in text; a header value cannot carry CR or LF). One definition for
 * the token verifier, the login lookup and the admin API's schemas.
 */
export const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex

export function hasControlCharacter (s: string): boolean {
  return CONTROL_CHARACTER.test(s)
}

declare global {
  // ES2024 (tsconfig's lib stops at es2023, which Node 20 covers whole); Node has had it since 20.0
  interface String { isWellFormed: () => boolean }
}

/**
 * What a claim may hold so that it reaches an upstream as its issuer wrote it (RFC 7493
 * §2.1–2.2): a string without a lone surrogate — its UTF-8 bytes in a header are U+FFFD's, so
 * `admin\ud800` would arrive as `admin\ufffd` — and a number that is finite and, if an
 * integer, within ±(2^53 − 1) (past that JSON.parse has already rounded it). One definition for
 * the token verifier (tokens/identity.ts) and the claims `users add` stores (sessions/users.ts).
 */
export function isWellFormed (s: string): boolean {
  return s.isWellFormed()
}

export function isExactNumber (n: number): boolean {
  return Number.isFinite(n) && (!Number.isInteger(n) || Number.isSafeInteger(n))
}
