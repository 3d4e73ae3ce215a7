import t from 'tap'
import { PassThrough, Readable } from 'node:stream'
import { readPassword } from '../../src/sessions/read-password.js'

t.test('--password-stdin reads everything and drops one trailing newline', async (t) => {
  t.equal(await readPassword({ fromStdin: true, input: Readable.from([Buffer.from('pa ss\n')]) }), 'pa ss')
  t.equal(await readPassword({ fromStdin: true, input: Readable.from([Buffer.from('pw\r\n')]) }), 'pw')
  t.equal(await readPassword({ fromStdin: true, input: Readable.from([Buffer.from('a\n\n')]) }), 'a\n', 'only one newline dropped')
  await t.rejects(readPassword({ fromStdin: true, input: Readable.from([Buffer.from('\n')]) }), { code: 'password_input' })
  await t.rejects(readPassword({ fromStdin: true, input: Readable.from([Buffer.alloc(2000, 'x')]) }), { code: 'password_input' })
})

t.test('without a terminal and without --password-stdin it refuses', async (t) => {
  await t.rejects(readPassword({ fromStdin: false, input: Readable.from([]) }), { code: 'password_input' })
})

/** a stand-in for a TTY: records raw mode and what was echoed */
function fakeTty (): { input: PassThrough & { isTTY: boolean, setRawMode: (raw: boolean) => void, raw: boolean[] }, output: PassThrough, written: () => string } {
  const input = Object.assign(new PassThrough(), { isTTY: true, raw: [] as boolean[], setRawMode (raw: boolean) { input.raw.push(raw) } })
  const output = new PassThrough()
  let out = ''
  output.on('data', (d: Buffer) => { out += d.toString() })
  return { input, output, written: () => out }
}

t.test('terminal prompt: no echo, raw mode restored, backspace, confirm', async (t) => {
  const tty = fakeTty()
  const p = readPassword({ fromStdin: false, input: tty.input, output: tty.output, prompt: 'Password: ' })
  tty.input.write('hunter3\u007f2\r')
  t.equal(await p, 'hunter2')
  t.same(tty.input.raw, [true, false])
  t.notMatch(tty.written(), /hunter/, 'nothing echoed')

  const tty2 = fakeTty()
  const p2 = readPassword({ fromStdin: false, input: tty2.input, output: tty2.output, confirm: true })
  tty2.input.write('abc\r')
  setTimeout(() => tty2.input.write('abd\r'), 10)
  await t.rejects(p2, { code: 'password_input' }, 'mismatch refused')

  const tty3 = fakeTty()
  const p3 = readPassword({ fromStdin: false, input: tty3.input, output: tty3.output })
  tty3.input.write('ab\u0003')
  await t.rejects(p3, { code: 'password_input' }, 'Ctrl-C interrupts')
})
