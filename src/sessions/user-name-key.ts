import { createHash } from 'node:crypto'

/**
 * The one key under which a user name is "the same name": NFKC, then JavaScript's lower
 * case, hashed so the key has a fixed size whatever the input (NFKC can grow a string
 * 18-fold: 256 × U+FDFA is 4,608 characters). `Alice`, `ALICE` and `Ａｌｉｃｅ` share it.
 *
 * Both places that compare names loosely use it, so they cannot disagree: the login
 * throttle counts an account's attempts under it (throttle.ts), and a new user whose key
 * is taken is refused (sql-store.ts createUser). Computed here rather than with SQL's
 * `lower()`, which folds only ASCII under the C locale (PGlite's) and does no NFKC at all
 * (fix-user-name-key).
 */
export function userNameKey (name: string): string {
  return createHash('sha256').update(name.normalize('NFKC').toLowerCase(), 'utf8').digest('base64url')
}
