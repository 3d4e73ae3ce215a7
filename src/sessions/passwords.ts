/**
 * Password hashing: argon2id with the OWASP Password Storage Cheat Sheet minimum
 * (m=19456 KiB, t=2, p=1), about 10–20 ms per hash or verify on these machines.
 *
 * Lengths are bounded in bytes before any hashing, so an oversized body is refused
 * cheaply, and an unknown user is verified against DUMMY_HASH so that "no such user"
 * costs the same argon2 time as "wrong password" (no user enumeration by timing).
 */
import { hash, parseOptions, verify } from '@node-rs/argon2'
import type { Options } from '@node-rs/argon2'
import { PasswordLengthError } from './errors.js'

/** `Algorithm.Argon2id`; the package's const enum cannot be read under isolatedModules */
const ARGON2ID = 2

export const PASSWORD_HASH_OPTIONS = Object.freeze({
  algorithm: ARGON2ID,
  memoryCost: 19_456,
  timeCost: 2,
  parallelism: 1,
}) satisfies Options

export const MIN_PASSWORD_BYTES = 1
/** long enough for any passphrase or generated secret; argon2 itself takes up to 4 GiB */
export const MAX_PASSWORD_BYTES = 1024

/**
 * The hash of a random, forgotten password, made once with PASSWORD_HASH_OPTIONS (a
 * test checks the parameters match). Verifying anything against it fails, at full cost.
 */
export const DUMMY_HASH = '$argon2id$v=19$m=19456,t=2,p=1$1VnbMAb4KYebkQv+rCX+hg$/GcRVOYFZMKMssINAEvKf8Ez+sjnADnmHmV8GQckVH8'

/** throws PasswordLengthError (400 empty / 413 too long) without hashing */
export function checkPasswordLength (password: string): void {
  const bytes = Buffer.byteLength(password, 'utf8')
  if (bytes < MIN_PASSWORD_BYTES) throw new PasswordLengthError(MAX_PASSWORD_BYTES, false)
  if (bytes > MAX_PASSWORD_BYTES) throw new PasswordLengthError(MAX_PASSWORD_BYTES, true)
}

export async function hashPassword (password: string): Promise<string> {
  checkPasswordLength(password)
  return await hash(password, PASSWORD_HASH_OPTIONS)
}

/**
 * Verifies `password` against `passwordHash`, or against DUMMY_HASH when the hash is
 * undefined (unknown user): the result is then always false, and the cost the same.
 */
export async function verifyPassword (passwordHash: string | undefined, password: string): Promise<boolean> {
  checkPasswordLength(password)
  try {
    const ok = await verify(passwordHash ?? DUMMY_HASH, password)
    return ok && passwordHash !== undefined
  } catch {
    // a malformed stored hash is a failed login, not a crash
    return false
  }
}

/** true when a stored hash was made with weaker or other parameters than today's */
export function needsRehash (passwordHash: string): boolean {
  try {
    const o = parseOptions(passwordHash)
    return o.algorithm !== ARGON2ID || o.memoryCost < PASSWORD_HASH_OPTIONS.memoryCost ||
      o.timeCost < PASSWORD_HASH_OPTIONS.timeCost || o.parallelism !== PASSWORD_HASH_OPTIONS.parallelism
  } catch {
    return true
  }
}
