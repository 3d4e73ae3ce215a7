/**
 * Reading a password for the CLI: from stdin (`--password-stdin`, for scripts and
 * secrets managers) or from a terminal prompt without echo. Never from argv: argv is
 * visible to every local user in `ps` and lands in shell history.
 */
import type { Readable, Writable } from 'node:stream'
import { PasswordInputError } from './errors.js'
import { MAX_PASSWORD_BYTES } from './passwords.js'

export interface ReadPasswordOptions {
  /** read the whole of stdin (one trailing newline is dropped) instead of prompting */
  fromStdin: boolean
  input?: Readable & { isTTY?: boolean, setRawMode?: (raw: boolean) => unknown }
  output?: Writable
  prompt?: string
  /** prompt twice and require both to match (new passwords) */
  confirm?: boolean
}

export async function readPassword (opts: ReadPasswordOptions): Promise<string> {
  const input = opts.input ?? process.stdin
  const output = opts.output ?? process.stderr
  if (opts.fromStdin) return await readAll(input)
  if (input.isTTY !== true || typeof input.setRawMode !== 'function') {
    throw new PasswordInputError('no terminal to prompt on: pipe the password and pass --password-stdin')
  }
  const first = await promptHidden(input as Readable & { setRawMode: (raw: boolean) => unknown }, output, opts.prompt ?? 'Password: ')
  if (opts.confirm === true) {
    const second = await promptHidden(input as Readable & { setRawMode: (raw: boolean) => unknown }, output, 'Repeat password: ')
    if (second !== first) throw new PasswordInputError('the passwords do not match')
  }
  return first
}

async function readAll (input: Readable): Promise<string> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of input) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : chunk as Buffer
    size += b.length
    // room for the password and a CRLF; anything beyond is refused, not truncated
    if (size > MAX_PASSWORD_BYTES + 2) throw new PasswordInputError(`the password is longer than ${MAX_PASSWORD_BYTES} bytes`)
    chunks.push(b)
  }
  const text = Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
  if (text === '') throw new PasswordInputError('no password on stdin')
  return text
}

async function promptHidden (input: Readable & { setRawMode: (raw: boolean) => unknown }, output: Writable, prompt: string): Promise<string> {
  output.write(prompt)
  input.setRawMode(true)
  input.resume()
  return await new Promise<string>((resolve, reject) => {
    let value = ''
    const done = (err?: Error): void => {
      input.off('data', onData)
      input.setRawMode(false)
      input.pause()
      output.write('\n')
      if (err !== undefined) reject(err)
      else if (value === '') reject(new PasswordInputError('empty password'))
      else resolve(value)
    }
    const onData = (data: Buffer | string): void => {
      for (const ch of data.toString('utf8')) {
        if (ch === '\r' || ch === '\n' || ch === '\u0004') return done()
        if (ch === '\u0003') return done(new PasswordInputError('interrupted'))
        if (ch === '\u007f' || ch === '\b') value = [...value].slice(0, -1).join('')
        else value += ch
      }
    }
    input.on('data', onData)
  })
}
