import t from 'tap'
import { startUpstream } from '../fixtures/upstream.js'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'

t.test('/metrics counts requests by route, status and reason, and exposes the gauges', async (t) => {
  const key = makeKey('EdDSA')
  const upstream = await startUpstream()
  t.teardown(() => upstream.close())
  const gw = await startGateway(t, baseConfig(key, [{ name: 'orders', prefix: '/api', upstream: upstream.url, auth: 'required' }]))
  const token = signWith(key, goodClaims())
  for (let i = 0; i < 3; i++) await raw(gw.url, '/api/x', { headers: { authorization: `Bearer ${token}` } })
  await raw(gw.url, '/api/x')
  await raw(gw.url, '/nowhere')
  const res = await raw(gw.adminUrl, '/metrics')
  t.equal(res.status, 200)
  t.match(res.headers['content-type'], /^text\/plain/)
  t.match(res.body, /portcullis_requests_total\{route="orders",status="200",reason="granted"\} 3\n/)
  t.match(res.body, /portcullis_requests_total\{route="orders",status="401",reason="missing_token"\} 1\n/)
  t.match(res.body, /portcullis_requests_total\{route="",status="404",reason="route_not_found"\} 1\n/)
  t.match(res.body, /portcullis_verify_cache_entries 1\n/, 'one distinct token verified and cached')
  t.match(res.body, /portcullis_denylist_entries 0\n/)
  t.match(res.body, /portcullis_ready 1\n/)
  t.notMatch(res.body, new RegExp(token.slice(0, 20)), 'no token material')
})
