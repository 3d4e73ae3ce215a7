/**
 * What a decision line costs to write, by batch size: lines built as plugins/access-log.ts
 * builds them, handed to the logger's destination (pino.destination, asynchronous, 4 KiB
 * minimum write, as src/logger.ts makes it) `batch` at a time, once per event-loop turn, to a
 * file. CPU (user + system, all threads) per line, against building the lines alone in the
 * same run. `node --import tsx bench/micro-decision-log.ts [lines]`
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'

const LINES = Number(process.argv[2] ?? 300_000)
const dir = mkdtempSync(join(tmpdir(), 'portcullis-log-'))

function line (i: number): string {
  return '{"level":30,"pid":123,"msg":"decision","time":' + Date.now() +
    ',"reqId":' + JSON.stringify(`req-${i.toString(36)}-0123456789ab`) +
    ',"route":"orders","granted":true,"reason":"granted"' +
    ',"sub":' + JSON.stringify(`user-pool-${i % 10_000}`) +
    ',"method":"GET","path":"/api/orders","status":200,"ms":' + (Math.round(Math.random() * 300) / 100) + '}\n'
}

async function run (batch: number, write: ((s: string) => void) | undefined): Promise<number> {
  const c0 = process.cpuUsage()
  let i = 0
  await new Promise<void>((resolve) => {
    const turn = (): void => {
      let s = ''
      for (let k = 0; k < batch; k++) s += line(i++)
      if (write !== undefined) write(s)
      else if (s.length === 0) throw new Error('unreachable')
      if (i < LINES) setImmediate(turn)
      else resolve()
    }
    turn()
  })
  const c = process.cpuUsage(c0)
  return (c.user + c.system) / LINES
}

const rows = ['| lines per write | µs per line, built only | µs per line, built and written | writing alone |', '|---:|---:|---:|---:|']
for (const batch of [1, 5, 75]) {
  const dest = pino.destination({ dest: join(dir, `b${batch}.log`), sync: false, minLength: 4096 })
  await new Promise((resolve) => dest.once('ready', resolve))
  await run(batch, (s) => dest.write(s)) // warm-up
  const built = await run(batch, undefined)
  const written = await run(batch, (s) => dest.write(s))
  dest.flushSync()
  dest.end()
  rows.push(`| ${batch} | ${built.toFixed(2)} | ${written.toFixed(2)} | ${(written - built).toFixed(2)} |`)
}
rmSync(dir, { recursive: true, force: true })
process.stdout.write(`${LINES.toLocaleString('en-US')} lines per measurement, Node ${process.version}\n\n${rows.join('\n')}\n`)
