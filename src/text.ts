/**
 * C0 control characters and DEL: what no identifier the gateway stores or forwards may hold
 * (PostgreSQL refuses NUL in text; a header value cannot carry CR or LF). One definition for
 * the token verifier, the login lookup and the admin API's schemas.
 */
export const CONTROL_CHARACTER = /[\u0000-\u001f\u007f]/ // eslint-disable-line no-control-regex

export function hasControlCharacter (s: string): boolean {
  return CONTROL_CHARACTER.test(s)
}
