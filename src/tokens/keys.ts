import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type JsonWebKey, type KeyObject } from 'node:crypto'
import { constants, copyFileSync, linkSync, lstatSync, mkdirSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { KID_PATTERN } from '../../config/schema.js'
import type { Algorithm, KeyConfig } from '../config/types.js'
import { ErrorCode, GatewayError } from '../errors.js'

/** What fast-jwt takes as a key: PEM text for key pairs, the secret for HS256. */
export type JwtKey = string

export interface VerifyKey { kid: string, key: JwtKey }

export interface KeySet {
  algorithm: Algorithm
  /** the first configured key */
  signing: { kid: string, key: JwtKey }
  /** every configured key, by kid */
  verifying: ReadonlyMap<string, VerifyKey>
  /** the public keys as served at /.well-known/jwks.json (empty for HS256) */
  jwks: { keys: JsonWebKey[] }
}

/** Builds the key set from validated configuration (PEMs were parsed once by the config checks). */
export function buildKeySet (algorithm: Algorithm, keys: readonly KeyConfig[]): KeySet {
  const verifying = new Map<string, VerifyKey>()
  const jwks: JsonWebKey[] = []
  let signing: { kid: string, key: JwtKey } | undefined
  for (const k of keys) {
    if (algorithm === 'HS256') {
      const secret = k.secret as string
      verifying.set(k.kid, { kid: k.kid, key: secret })
      signing ??= { kid: k.kid, key: secret }
      continue
    }
    const publicKey: KeyObject = k.publicKeyPem !== undefined
      ? createPublicKey(k.publicKeyPem)
      : createPublicKey(createPrivateKey(k.privateKeyPem as string))
    const publicPem = publicKey.export({ type: 'spki', format: 'pem' }).toString()
    verifying.set(k.kid, { kid: k.kid, key: publicPem })
    if (signing === undefined && k.privateKeyPem !== undefined) signing = { kid: k.kid, key: k.privateKeyPem }
    jwks.push({ ...publicKey.export({ format: 'jwk' }), kid: k.kid, alg: algorithm, use: 'sig' })
  }
  if (signing === undefined) throw new Error('no signing key (the configuration checks should have refused this)')
  return { algorithm, signing, verifying, jwks: { keys: jwks } }
}

export interface GeneratedKey { privateFile: string, publicFile?: string }

// the config's own rule (tokens.keys[].kid), so every kid written is one the config accepts;
// it has no `/`, so `<kid>.pem` is one name inside --out, never a path out of it
const KID = new RegExp(KID_PATTERN)

/** why `kid` cannot name a key file, or undefined when it can */
export function checkKid (kid: string): string | undefined {
  return KID.test(kid) ? undefined : `--kid ${JSON.stringify(kid.slice(0, 80))} is not a key id the configuration accepts (1 to 64 of A-Z a-z 0-9 . _ -)`
}

/**
 * Why keys must not be written into `outDir` (an existing path), or undefined. Whoever may
 * write to the directory may later swap the public key for theirs or the private key for
 * one they know, and the gateway would sign or verify with it: a group- or world-writable
 * directory is refused, not warned about, since a warning scrolls by and the key stays.
 * A sticky one (/tmp) is refused too: it stops a swap, not a name taken first, and a shared
 * directory is no place for a signing key. POSIX modes only; Windows has ACLs, which this
 * does not read.
 */
export function checkOutDir (outDir: string): string | undefined {
  const stat = statSync(outDir)
  if (!stat.isDirectory()) return `--out ${outDir} is not a directory`
  if (process.platform !== 'win32' && (stat.mode & 0o022) !== 0) {
    return `--out ${outDir} is writable by ${(stat.mode & 0o002) !== 0 ? 'every user' : 'its group'} (mode ${(stat.mode & 0o777).toString(8)}), who could replace the key: chmod go-w it or choose another directory`
  }
  return undefined
}

/**
 * `portcullis keys generate`: a new key in PEM (PKCS#8 private, SPKI public), or an HS256
 * secret. All or nothing: an existing file of the pair (or a symlink planted there) refuses
 * the whole before anything is written, and the files appear whole or not at all. Each is
 * written under an exclusive temporary name in `outDir`, then hard-linked to its name, which
 * fails on anything already there (rename would replace it); on any failure what this call
 * linked and wrote is removed. A private key once stayed behind when `<kid>.pub.pem`
 * existed, and its retry then failed on it (fix-cli-inputs-unchecked).
 */
export function generateKey (algorithm: Algorithm, kid: string, outDir: string): GeneratedKey {
  const refused = checkKid(kid)
  if (refused !== undefined) throw new GatewayError(ErrorCode.invalidUserInput, 400, refused)
  mkdirSync(outDir, { recursive: true, mode: 0o700 })
  const insecure = checkOutDir(outDir)
  if (insecure !== undefined) throw new GatewayError(ErrorCode.invalidUserInput, 400, insecure)
  const files: KeyFile[] = []
  if (algorithm === 'HS256') {
    files.push({ path: join(outDir, `${kid}.secret`), content: randomBytes(48).toString('base64url') + '\n', mode: 0o600 })
  } else {
    const pair = algorithm === 'EdDSA'
      ? generateKeyPairSync('ed25519')
      : algorithm === 'ES256'
        ? generateKeyPairSync('ec', { namedCurve: 'P-256' })
        : generateKeyPairSync('rsa', { modulusLength: 2048 })
    files.push(
      { path: join(outDir, `${kid}.pem`), content: pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), mode: 0o600 },
      { path: join(outDir, `${kid}.pub.pem`), content: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(), mode: 0o644 }
    )
  }
  const taken = files.filter(f => isTaken(f.path)).map(f => f.path)
  if (taken.length > 0) {
    // the file system's own code, as when the exclusive write below finds one (a race)
    const message = `${taken.join(' and ')} ${taken.length === 1 ? 'exists' : 'exist'} (EEXIST): a key is never overwritten (choose another --kid, or move ${taken.length === 1 ? 'it' : 'them'} away)`
    throw Object.assign(new Error(message), { code: 'EEXIST', path: taken[0] })
  }
  writeAllOrNothing(outDir, files)
  return { privateFile: (files[0] as KeyFile).path, ...(files.length > 1 ? { publicFile: (files[1] as KeyFile).path } : {}) }
}

interface KeyFile { path: string, content: string, mode: number }

function writeAllOrNothing (outDir: string, files: readonly KeyFile[]): void {
  const temporary: string[] = []
  const placed: string[] = []
  try {
    const temps = files.map(f => {
      const tmp = join(outDir, `.${randomBytes(8).toString('hex')}.tmp`)
      // wx: O_CREAT|O_EXCL, which also refuses (never follows) a symlink planted at the name
      writeFileSync(tmp, f.content, { mode: f.mode, flag: 'wx' })
      temporary.push(tmp)
      return tmp
    })
    files.forEach((f, i) => {
      placeWithoutOverwriting(temps[i] as string, f.path)
      placed.push(f.path)
    })
  } catch (err) {
    // only names this call created: a file that was there first (EEXIST) is not ours
    for (const p of [...placed, ...temporary]) {
      try { unlinkSync(p) } catch {}
    }
    throw err
  }
  for (const tmp of temporary) {
    try { unlinkSync(tmp) } catch {}
  }
}

/**
 * link(2) fails with EEXIST on anything at `target`, symlinks included. A file system without
 * hard links (some FUSE and SMB mounts, FAT) gets an exclusive copy instead (COPYFILE_EXCL:
 * O_EXCL on the target), which also never overwrites.
 */
function placeWithoutOverwriting (tmp: string, target: string): void {
  try {
    linkSync(tmp, target)
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code
    if (code !== 'EPERM' && code !== 'ENOTSUP' && code !== 'EOPNOTSUPP' && code !== 'ENOSYS') throw err
    try {
      copyFileSync(tmp, target, constants.COPYFILE_EXCL)
    } catch (copyErr) {
      // a copy that failed half-way (ENOSPC) created the target: ours to remove; EEXIST's is not
      if ((copyErr as NodeJS.ErrnoException).code !== 'EEXIST') try { unlinkSync(target) } catch {}
      throw copyErr
    }
  }
}

/** lstat, not stat: a dangling symlink is there too */
function isTaken (path: string): boolean {
  return lstatSync(path, { throwIfNoEntry: false }) !== undefined
}
