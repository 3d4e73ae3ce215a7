import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from 'node:fs'

/**
 * Every file the configuration names (the gateway.yaml itself, key, secret and certificate
 * files) is read here, at start and again on each reload — which runs on the running
 * gateway's event loop. A FIFO named as a key file blocked the open until a writer came and
 * froze the gateway; a symlink to /dev/zero was read until memory ran out; a 300 MB file was
 * read whole. A file is opened without blocking, must be a regular file, and is read up to a cap.
 */

/** private and public keys, HS256 secrets: an RSA-16384 private key is ~13 KiB of PEM */
export const MAX_KEY_FILE_BYTES = 64 * 1024
/**
 * a certificate chain or a CA bundle: a leaf with its intermediates is a few KiB, but caFile may
 * be a whole bundle (Debian's ca-certificates.crt, ~150 roots, is ~220 KB)
 */
export const MAX_CERT_CHAIN_FILE_BYTES = 1024 * 1024
/** gateway.yaml: the 10k-route benchmark configuration (bench/lib/portcullis.ts) is 1.3 MB */
export const MAX_CONFIG_FILE_BYTES = 4 * 1024 * 1024

/** the longest value taken for a file name: PATH_MAX is 4096, no real configuration comes near this */
const MAX_FILE_NAME_CHARS = 1024

export const FileReadErrorCode = {
  notRegularFile: 'FILE_NOT_REGULAR',
  tooLarge: 'FILE_TOO_LARGE',
} as const
export type FileReadErrorCode = typeof FileReadErrorCode[keyof typeof FileReadErrorCode]

export class FileReadError extends Error {
  readonly code: FileReadErrorCode

  constructor (code: FileReadErrorCode, message: string) {
    super(message)
    this.name = 'FileReadError'
    this.code = code
  }
}

/**
 * A regular file of at most `maxBytes`. Throws the fs error (with its `code`) or a FileReadError.
 * Synchronous on purpose: the loader is synchronous, and with the checks below a read is bounded.
 */
export function readBoundedFile (path: string, maxBytes: number): Buffer {
  // O_NONBLOCK: opening a FIFO for reading otherwise waits for a writer; on a regular file it changes nothing
  const fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK)
  try {
    // the descriptor, not the name: a file swapped between a check and the open cannot slip past
    const stat = fstatSync(fd)
    if (!stat.isFile()) throw new FileReadError(FileReadErrorCode.notRegularFile, `it is ${kindOf(stat)}, not a regular file`)
    if (stat.size > maxBytes) throw tooLarge(maxBytes)
    // what fstat said, plus one byte to see the end; a file that grows while read (or a /proc file,
    // which says 0) is read on, never past the cap
    let buffer = Buffer.alloc(stat.size + 1)
    let length = 0
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null)
      if (n === 0) return buffer.subarray(0, length)
      length += n
      if (length > maxBytes) throw tooLarge(maxBytes)
      if (length === buffer.length) {
        const bigger = Buffer.alloc(Math.min(Math.max(2 * buffer.length, 8192), maxBytes + 1))
        buffer.copy(bigger, 0, 0, length)
        buffer = bigger
      }
    }
  } finally {
    closeSync(fd)
  }
}

/** what went wrong reading a file, without its name: the errno code (ENOENT, EACCES) or what was refused */
export function readFailure (err: unknown): string {
  if (err instanceof FileReadError) return err.message
  return (err as NodeJS.ErrnoException | undefined)?.code ?? 'error'
}

function tooLarge (maxBytes: number): FileReadError {
  return new FileReadError(FileReadErrorCode.tooLarge, `it is larger than ${formatBytes(maxBytes)}`)
}

function formatBytes (bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${Math.ceil(bytes / 1024)} KiB`
}

function kindOf (stat: Stats): string {
  if (stat.isDirectory()) return 'a directory'
  if (stat.isFIFO()) return 'a FIFO'
  if (stat.isCharacterDevice()) return 'a character device'
  if (stat.isBlockDevice()) return 'a block device'
  if (stat.isSocket()) return 'a socket'
  return 'something else'
}

/**
 * Why a value is no file name at all, or undefined when it may be one. `privateKeyFile:
 * "${SIGNING_KEY}"` with the PEM in the environment printed the key in `check`, the log and a
 * reload's answer ("cannot read -----BEGIN PRIVATE KEY-----…: ENOENT"); such a value is not
 * opened, and its message describes it without quoting it.
 */
function notAFileName (value: string): string | undefined {
  const lines = value.replace(/\r?\n$/, '').split(/\r\n|\r|\n/).length
  const shape = lines > 1 ? `${value.length} characters over ${lines} lines` : `${value.length} characters`
  if (/-----(BEGIN|END) /.test(value)) return `PEM text, ${shape}`
  if (lines > 1) return shape
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029]/.test(value)) return `${shape} with control characters`
  if (value.length > MAX_FILE_NAME_CHARS) return shape
  return undefined
}

/**
 * A value that may be a file name but may as well be a secret pasted into a *File field
 * (`secretFile: ${HS256_SECRET}`): one run of base64 or hex characters, 32 or more, with letters
 * and digits and no `.`. It is still opened (it may be a file), but a message does not quote it.
 */
function mayBeSecret (value: string): boolean {
  return value.length >= 32 && /^[A-Za-z0-9+/=_-]+$/.test(value) && /[0-9]/.test(value) && /[A-Za-z]/.test(value)
}

/** whether a value is worth opening as a file (see `fileProblem` for the message when it is not) */
export function isFileName (value: string): boolean {
  return notAFileName(value) === undefined
}

/**
 * The one message for a file that cannot be used, for every file the configuration names: the
 * value is quoted only when it plausibly is a path. `instead` says where such text belongs
 * (`use privateKey`), for a field that has an inline sibling.
 */
export function fileProblem (value: string, err: unknown, instead?: string): string {
  const advice = instead === undefined ? '' : ` ${instead}`
  const notAName = notAFileName(value)
  if (notAName !== undefined) return `is not a file name (${notAName}: a key or secret given where a file is expected?${advice})`
  const reason = readFailure(err)
  if (mayBeSecret(value)) {
    return `cannot read the file this value names: ${reason} (the value, ${value.length} characters, is not shown: it may be a secret given where a file is expected?${advice})`
  }
  return `cannot read ${value}: ${reason}`
}
