/**
 * The demo page (`npm run demo` → /app/), the first thing a newcomer opens, driven in
 * Chromium as they would: the demo stack (demo/stack.ts: the real gateway.yaml and the demo
 * upstream) on free ports with an in-memory store. Log in, call an API, refresh, a second
 * tab, the WebSocket, "log out everywhere".
 */
import t from 'tap'
import { fileURLToPath } from 'node:url'
import { pino } from 'pino'
import { demoSandbox, startDemo } from '../../demo/stack.js'
import { openStore } from '../../src/sessions/store.js'
import { launchBrowser, newContext, openPage, requireBrowser } from '../fixtures/browser.js'

const PASSWORD = 'demo-suite-password'

if (requireBrowser(t)) {
  const demo = await startDemo({
    // the repository's gateway.yaml, copied beside a throwaway key
    configFile: demoSandbox(fileURLToPath(new URL('../../gateway.yaml', import.meta.url)), t.testdir()),
    env: { PORT: '0', ADMIN_PORT: '0' },
    upstreamPort: 0,
    store: await openStore({ dataDir: 'memory://' }),
    password: PASSWORD,
    logger: pino({ level: 'silent' }),
    handleSignals: false,
  })
  t.teardown(() => demo.close())
  const browser = await launchBrowser(t)
  const url = `${demo.url}/app/`

  t.test('the demo page: log in, call an API, refresh, two tabs, a WebSocket, log out everywhere', async (t) => {
    const context = await newContext(browser)
    const a = await openPage(context, url)
    const text = async (selector: string): Promise<string> => await a.page.locator(selector).innerText()
    await a.page.getByText('no session to resume').waitFor()
    t.equal(await a.page.locator('#login-form').isVisible(), true, 'no session yet: the login form')

    await a.page.fill('input[name=password]', 'wrong-password')
    await a.page.click('#login-form button[type=submit]')
    await a.page.locator('#login-error', { hasText: 'wrong user name or password' }).waitFor()

    await a.page.fill('input[name=password]', PASSWORD)
    await a.page.click('#login-form button[type=submit]')
    await a.page.locator('#signed-in').waitFor({ state: 'visible' })
    t.equal(await text('#who'), 'demo')
    t.equal(await text('#cookie-view'), 'nothing', 'the page shows that script sees no refresh token')
    t.ok((await context.cookies(demo.url)).some((c) => c.name === '__Host-portcullis-rt' && c.httpOnly), 'though the browser holds it')
    t.match(await text('#remaining'), /^\d+:\d\d$/, 'the countdown runs')
    t.match(await text('#next-refresh'), /^in \d+:\d\d/)

    await a.page.click('[data-path="/api/orders/1"]')
    await a.page.locator('#api-out', { hasText: 'x-user-id' }).waitFor()
    const api = await text('#api-out')
    t.match(api, /^GET \/api\/orders\/1 → 200/)
    t.match(api, /x-user-scopes: orders:read orders:write/)
    t.match(api, /authorization: \(not forwarded\)/)

    await a.page.click('#refresh')
    await a.page.locator('#refresh-count', { hasText: '1' }).waitFor()

    // a second tab resumes the session from the cookie; the first adopts its token
    const b = await openPage(context, url)
    await b.page.locator('#signed-in').waitFor({ state: 'visible' })
    await a.page.getByText('another tab refreshed').waitFor()

    await a.page.click('#ws-open')
    await a.page.locator('#ws-state', { hasText: 'open · protocol portcullis' }).waitFor()
    await a.page.locator('#ws-log', { hasText: 'welcome, user' }).waitFor()
    await a.page.click('#ws-send')
    await a.page.locator('#ws-log', { hasText: 'echo "hello"' }).waitFor()

    await b.page.click('#logout-all')
    await a.page.getByText('logged out everywhere: every session of this user (in another tab)').waitFor()
    await a.page.locator('#ws-log', { hasText: 'closed by the gateway: the access token was revoked (1008)' }).waitFor()
    await a.page.locator('#login-form').waitFor({ state: 'visible' })
    t.equal(await a.page.locator('[data-path]').first().isDisabled(), true, 'API buttons off without a session')
    t.equal((await context.cookies(demo.url)).some((c) => c.name === '__Host-portcullis-rt'), false, 'the cookie is gone')

    // the only console errors allowed: the browser's own lines for the 400/401 answers the page handles
    const unexpected = [...a.errors, ...b.errors].filter((e) => !/Failed to load resource: the server responded with a status of 40[01]/.test(e))
    t.same(unexpected, [], 'no script errors, no CSP violations')
    await context.close()
  })
}
