import { test } from 'tap'
import { createServer } from 'node:http'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { BODY_REQUESTS } from '../../bench/lib/configs.js'
import { runWrk } from '../../bench/lib/wrk.js'

// The runner holds a warm portcullis run to "every token wrk cycles is in the verify cache".
// With a body, bench/wrk/load.lua cycles only its first few pre-formatted requests, and the
// runner must expect exactly those: asking for the whole 10,000-token pool failed every 1 MB
// run as "not warm" (2026-12-01). Real wrk, real load.lua, a real server counting tokens.
test('with a body, wrk cycles exactly BODY_REQUESTS tokens of the pool', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'body-pool-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const tokenFile = join(dir, 'tokens')
  writeFileSync(tokenFile, Array.from({ length: 200 }, (_, i) => `token-${i}`).join('\n') + '\n')
  const bodyFile = join(dir, 'body')
  writeFileSync(bodyFile, Buffer.alloc(4096, 1))
  const seen = new Set<string>()
  const seenWithout = new Set<string>()
  const server = createServer((req, res) => {
    const target = req.method === 'POST' ? seen : seenWithout
    target.add(req.headers.authorization ?? '')
    req.resume()
    req.on('end', () => { res.end('ok') })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const withBody = await runWrk({ url, connections: 4, durationSec: 1, tokenFile, path: '/', method: 'POST', bodyFile, mode: 'pool', timeoutSec: 2 })
  t.ok(withBody.requests > 2 * BODY_REQUESTS, `enough requests to cycle the tokens twice (${withBody.requests})`)
  t.equal(seen.size, BODY_REQUESTS, 'the distinct tokens sent with a body are the ones the runner waits for')
  t.ok(seen.has('Bearer token-0') && seen.has(`Bearer token-${BODY_REQUESTS - 1}`), 'the first ones of the file')
  // without a body the whole pool is cycled: the runner's POOL_SIZE case
  const withoutBody = await runWrk({ url, connections: 4, durationSec: 1, tokenFile, path: '/', method: 'GET', mode: 'pool', timeoutSec: 2 })
  t.ok(withoutBody.requests > 200, `enough requests to cycle the file (${withoutBody.requests})`)
  t.equal(seenWithout.size, 200, 'without a body every token of the file is sent')
})
