/**
 * fix-client-trusts-upstream-answers, in real Chromium with the app on another origin than
 * the gateway: an upstream answering 401 `{"code":"token_expired"}` (with the gateway's
 * challenge, and the gateway's `portcullis-error` header forged) made the SDK refresh on
 * every call. Now the SDK refreshes only on the gateway's own answer, marked with
 * `portcullis-error`, which the proxy strips from upstream answers and CORS exposes — so
 * the page can read it, and the gateway's real `token_expired` still refreshes once.
 * Refreshes are counted at the gateway (decision lines).
 */
import t from 'tap'
import { requireBrowser } from '../fixtures/browser.js'
import { ACCESS_TTL_SEC, CLOCK_SKEW_SEC, call, ok, startBrowserEnv, type Described, type Settled } from './helpers.js'

interface TokenId { jti: string, sid: string }

if (requireBrowser(t)) {
  const env = await startBrowserEnv(t, {
    upstream: (req, res) => {
      if (req.url === '/api/upstream-401') {
        res.writeHead(401, {
          'content-type': 'application/json',
          'www-authenticate': 'Bearer realm="upstream", error="invalid_token", error_description="the access token expired"',
          'portcullis-error': 'token_expired',
        }).end(JSON.stringify({ statusCode: 401, code: 'token_expired', message: 'the access token expired' }))
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ ok: true, url: req.url }))
    },
  })

  t.test("an upstream's 401 token_expired: no refresh; the gateway's: one, read across origins", async (t) => {
    const tab = await env.openTab()
    const user = await env.addUser('uma')
    ok(t, await call<Settled<void>>(tab, 'login', 'uma', user.password), 'login')
    const before = await call<TokenId>(tab, 'tokenId')
    const refreshes = await env.refreshes()

    for (let i = 0; i < 5; i++) {
      const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/upstream-401'), 'fetch')
      t.equal(res.status, 401, "the upstream's 401 is returned")
      t.equal(res.headers['portcullis-error'], undefined, "the upstream's forged mark never reaches the page")
    }
    t.equal(await env.refreshes(), refreshes, "no refresh on the upstream's say-so")
    t.equal((await call<TokenId>(tab, 'tokenId')).jti, before.jti, 'the same token')

    const refused = ok(t, await call<Settled<Described>>(tab, 'rawFetch', `${env.gw.url}/api/orders/1`), 'rawFetch')
    t.equal(refused.status, 401)
    t.equal(refused.headers['portcullis-error'], 'missing_token', "the page reads the gateway's mark across origins")

    env.gatewayClock.advanceSec(ACCESS_TTL_SEC + CLOCK_SKEW_SEC + 1)
    const res = ok(t, await call<Settled<Described>>(tab, 'fetch', '/api/orders/1'), 'fetch')
    t.equal(res.status, 200, "the gateway's token_expired: refreshed and sent again")
    t.equal(await env.refreshes(), refreshes + 1, 'one refresh')
  })
}
