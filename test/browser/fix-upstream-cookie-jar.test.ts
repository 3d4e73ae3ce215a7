/**
 * fix-upstream-cookie-jar (a hostile review of the browser client, 2026-12-05): an upstream's
 * `Set-Cookie` reached the browser as sent, for the whole gateway origin. One upstream could
 * then
 * - fill the jar: ~24 KB of cookies at `Path=/` went with every request of that browser to the
 *   gateway, so `/auth/refresh` and `/auth/logout` answered 431 (from the HTTP parser, before
 *   any CORS header — the SDK saw a network error and could not even log out);
 * - plant a cookie that another route's upstream reads (`session=…` at `Path=/`: a session
 *   fixation across services).
 * Each route's cookies are now its own (`cookies: route`, the default): kept under its prefix,
 * host-only, so neither reaches another route or the auth endpoints; `cookies: pass` is the old
 * behaviour, for an upstream that shares cookies on purpose.
 *
 * Real Chromium stores and sends the cookies; cookie mode, the app on its own origin as the
 * browser suites have it. The user logs in, then a page of a public route fills the jar.
 */
import t from 'tap'
import { requireBrowser, launchBrowser, newContext, openPage } from '../fixtures/browser.js'
import { startUpstream } from '../fixtures/upstream.js'
import { call, ok, startCookieGateway, startSite, type Settled } from './helpers.js'

/**
 * the bomb: answers of 12 cookies of 1,000 bytes (an answer's header block stays under the
 * 16 KiB undici takes), two of them — 24 KB, past the 16 KiB a request's headers may take (the
 * second request still carries only the first answer's 12 KB)
 */
const BOMB_ANSWERS = 2
const COOKIES_PER_ANSWER = 12
const BOMB_COOKIE_BYTES = 1_000

if (requireBrowser(t)) {
  const upstream = await startUpstream((req, res) => {
    const bomb = /\/bomb\/(\d+)$/.exec(req.url)
    if (bomb !== null) {
      const filler = 'x'.repeat(BOMB_COOKIE_BYTES)
      res.setHeader('set-cookie', Array.from({ length: COOKIES_PER_ANSWER }, (_, i) => `bomb${bomb[1]}_${i}=${filler}; Path=/`))
      res.writeHead(200, { 'content-type': 'text/plain' }).end('filled')
    } else if (req.url.endsWith('/plant')) {
      res.setHeader('set-cookie', ['session=attacker; Path=/', 'theme=dark'])
      res.writeHead(200, { 'content-type': 'text/plain' }).end('planted')
    } else {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
    }
  })
  t.teardown(() => upstream.close())
  const app = await startSite(t)
  const { gw, password } = await startCookieGateway(t, app, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'shared', prefix: '/shared', upstream: upstream.url, auth: 'public', cookies: 'pass' },
    { name: 'other', prefix: '/other', upstream: upstream.url, auth: 'public' },
  ])
  const browser = await launchBrowser(t)
  /** the Cookie header the upstream got for the last request to `path` */
  const cookieSent = (path: string): string => {
    const r = upstream.requests.filter((q) => q.url === path).at(-1)
    return r === undefined ? '(not received)' : String(r.headers.cookie ?? '')
  }

  t.test('a route that fills the jar breaks only itself: refresh and logout still work', async (t) => {
    const context = await newContext(browser)
    const tab = await openPage(context, `${app.origin}/?gateway=${encodeURIComponent(gw.url)}`, 'globalThis.harness !== undefined')
    ok(t, await call<Settled<void>>(tab, 'login', 'alice', password), 'the user logs in on the app')

    const page = await context.newPage()
    const statuses: Array<number | undefined> = []
    for (let i = 0; i < BOMB_ANSWERS; i++) statuses.push((await page.goto(`${gw.url}/open/bomb/${i}`))?.status())
    t.same(statuses, statuses.map(() => 200), 'the public route\'s pages set their cookies')
    const jar = await context.cookies(gw.url + '/open/')
    t.equal(jar.filter((c) => c.name.startsWith('bomb')).length, BOMB_ANSWERS * COOKIES_PER_ANSWER, 'Chromium keeps every one of them')
    t.ok(jar.every((c) => !c.name.startsWith('bomb') || c.path === '/open'), 'each under the route\'s prefix')

    ok(t, await call<Settled<void>>(tab, 'refresh'), 'a refresh still works (its request carries none of them)')
    const res = ok(t, await call<Settled<{ status: number }>>(tab, 'fetch', '/api/items'), 'the app\'s calls still work')
    t.equal(res.status, 200)
    ok(t, await call<Settled<void>>(tab, 'logout'), 'and so does logout')
    // over HTTP/1.1 a 431 with a JSON body; over HTTP/2 Node answers an oversized header block
    // with a bare 431, which Chromium reports as a failed navigation
    const own = await page.goto(`${gw.url}/open/again`).then((r) => r?.status(), (err: Error) => err.message)
    t.match(String(own), /^431$|ERR_HTTP_RESPONSE_CODE_FAILURE/, 'the route that filled the jar is the one refused (431)')
    t.notOk(upstream.requests.some((r) => r.url === '/open/again'), 'and its upstream never sees that request')
    await context.close()
  })

  t.test('a cookie one route\'s upstream sets never reaches another route\'s', async (t) => {
    const context = await newContext(browser)
    const page = await context.newPage()
    await page.goto(`${gw.url}/open/plant`)
    await page.goto(`${gw.url}/other/read`)
    t.equal(cookieSent('/other/read'), '', 'another route gets no cookie')
    await page.goto(`${gw.url}/open/read`)
    t.equal(cookieSent('/open/read'), 'session=attacker; theme=dark', 'the route that set them gets them back')

    // the control: a `cookies: pass` route shares its cookies with the whole origin, as before
    await page.goto(`${gw.url}/shared/plant`)
    await page.goto(`${gw.url}/other/read-again`)
    t.match(cookieSent('/other/read-again'), /session=attacker/, 'with `cookies: pass` another route receives it')
    await context.close()
  })
}
