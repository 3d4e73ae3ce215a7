/**
 * CORS as Chromium enforces it, the app and the gateway on different origins (helpers.ts):
 * the browser's preflights are answered by the gateway (before authentication, never
 * proxied), the exposed headers reach script, and a page on an origin the gateway does not
 * list can neither call an API nor touch the session — its requests stop at the preflight.
 */
import t from 'tap'
import { requireBrowser } from '../fixtures/browser.js'
import { call, ok, startBrowserEnv, type Described, type Settled } from './helpers.js'

if (requireBrowser(t)) {
  const env = await startBrowserEnv(t)
  const user = await env.addUser('alice')

  t.test('the app origin: preflights answered by the gateway, never proxied; exposed headers readable', async (t) => {
    const tab = await env.openTab()
    ok(t, await call<Settled<void>>(tab, 'login', 'alice', user.password), 'login')
    const seen = env.upstream.requests.length

    // Authorization makes the request non-simple: Chromium asks first
    const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/items?x=1', { method: 'PUT', body: 'data' }), 'fetch')
    t.equal(res.status, 200)
    t.match(res.headers['x-request-id'], /\S/, 'x-request-id is exposed to script')
    const lines = (await env.settledDecisions()).filter((d) => d.path === '/api/items')
    t.match(lines.map((d) => [d.method, d.status, d.reason, d.sub]), [['OPTIONS', 204, 'cors_preflight', null], ['PUT', 200, 'granted', user.id]],
      'the preflight carried no token and was answered before authentication')
    const forwarded = env.upstream.requests.slice(seen)
    t.same(forwarded.map((r) => r.method), ['PUT'], 'the upstream saw the request, never the preflight')

    // the gateway's own errors carry CORS too, so the SDK can read why it was refused
    const refused = ok(t, await call<Settled<Described>>(tab, 'rawFetch', `${env.gw.url}/api/items`, { headers: { authorization: 'Bearer e30.e30.e30' } }), 'raw fetch')
    t.equal(refused.status, 401)
    t.match(refused.headers['www-authenticate'], /error="invalid_token"/, 'WWW-Authenticate is exposed')
    t.match(JSON.parse(refused.body), { code: /^token_/ })
    t.same(tab.errors.filter((e) => /CORS|access control/i.test(e)), [], 'no CORS errors in the console')
    await tab.page.close()
  })

  t.test('a page on an origin the gateway does not list: its calls stop at the preflight', async (t) => {
    const context = await env.newContext()
    const app = await env.openTab(env.app, context)
    ok(t, await call<Settled<void>>(app, 'login', 'alice', user.password), 'login on the app origin')
    const evil = await env.openTab(env.third, context)
    const seen = env.upstream.requests.length
    const decisions = env.decisions.length

    const api = await call<Settled<Described>>(evil, 'rawFetch', `${env.gw.url}/api/steal`, { headers: { authorization: 'Bearer e30.e30.e30' } })
    t.match(api, { ok: false, name: 'TypeError' }, 'fetch fails in script')
    const login = await call<Settled<void>>(evil, 'login', 'alice', user.password)
    t.match(login, { ok: false, name: 'NetworkError', code: 'network_error' }, 'the SDK cannot log in from there')
    // the session cookie is in this browser; a refresh from the foreign page must not spend it
    const restore = await call<Settled<boolean>>(evil, 'restore')
    t.match(restore, { ok: false, name: 'NetworkError' }, 'nor refresh the session')

    const lines = (await env.settledDecisions()).slice(decisions)
    t.same(lines.map((d) => [d.method, d.path, d.status, d.reason]), [
      ['OPTIONS', '/api/steal', 403, 'cors_rejected'],
      ['OPTIONS', '/auth/login', 403, 'cors_rejected'],
      ['OPTIONS', '/auth/refresh', 403, 'cors_rejected'],
    ], 'the gateway saw preflights only, and refused them')
    t.equal(env.upstream.requests.length, seen, 'nothing reached the upstream')

    // a simple request (no preflight) is sent — CORS hides the answer, it does not stop the
    // request; that is why the auth endpoints check Origin themselves (CSRF)
    const simple = await call<Settled<Described>>(evil, 'rawFetch', `${env.gw.url}/open/page`)
    t.match(simple, { ok: false, name: 'TypeError' }, 'script cannot read a public answer either')
    t.equal(env.upstream.requests.at(-1)?.url, '/open/page', 'though the request itself went through')

    const refreshed = await call<Settled<void>>(app, 'refresh')
    t.ok(refreshed.ok, 'the app still has its session: its refresh cookie was never presented')
    const again = ok(t, await call<Settled<Described>>(app, 'fetch', '/api/still'), 'fetch')
    t.equal(again.status, 200)
    await context.close()
  })
}
