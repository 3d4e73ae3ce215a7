/**
 * Takes docs/demo.png: the demo (demo/stack.ts: gateway.yaml + the demo upstream) on free
 * ports with an in-memory store, the page driven in headless Chromium as a newcomer would
 * use it — log in, call an API, refresh, open the WebSocket and send a message.
 *
 *   node --import tsx scripts/screenshot-demo.ts [out.png]
 *
 * Needs Debian's chromium (apt-get install chromium); see TOOLCHAIN.md "Browser tests".
 */
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { pino } from 'pino'
import { chromium } from 'playwright-core'
import { openStore } from '../src/sessions/store.js'
import { demoSandbox, startDemo } from '../demo/stack.js'
import { CHROMIUM_ARGS, CHROMIUM_PATH } from '../test/fixtures/browser.js'

const out = process.argv[2] ?? 'docs/demo.png'
const password = 'correct-horse-battery'
const sandbox = mkdtempSync(join(tmpdir(), 'portcullis-screenshot-'))

const demo = await startDemo({
  configFile: demoSandbox('gateway.yaml', sandbox), // this checkout's gateway.yaml, a throwaway key
  env: { PORT: '0', ADMIN_PORT: '0' },
  upstreamPort: 0,
  store: await openStore({ dataDir: 'memory://' }),
  password,
  logger: pino({ level: 'silent' }),
  handleSignals: false,
})
const browser = await chromium.launch({ executablePath: CHROMIUM_PATH, headless: true, args: [...CHROMIUM_ARGS] })
try {
  const page = await browser.newPage({ viewport: { width: 1100, height: 860 } })
  await page.goto(`${demo.url}/app/`)
  await page.getByText('no session to resume').waitFor()
  await page.fill('input[name=password]', password)
  await page.click('#login-form button[type=submit]')
  await page.locator('#signed-in').waitFor({ state: 'visible' })
  await page.click('[data-path="/api/orders/1"]')
  await page.locator('#api-out', { hasText: 'x-user-id' }).waitFor()
  await page.click('#refresh')
  await page.locator('#refresh-count', { hasText: '1' }).waitFor()
  await page.click('#ws-open')
  await page.locator('#ws-state', { hasText: 'open' }).waitFor()
  await page.click('#ws-send')
  await page.locator('#ws-log', { hasText: 'echo "hello"' }).waitFor()
  await page.waitForTimeout(1500) // let the countdown move off the full lifetime
  mkdirSync(dirname(out), { recursive: true })
  await page.screenshot({ path: out, fullPage: true })
  process.stdout.write(`wrote ${out}\n`)
} finally {
  await browser.close()
  await demo.close()
  rmSync(sandbox, { recursive: true, force: true })
}
