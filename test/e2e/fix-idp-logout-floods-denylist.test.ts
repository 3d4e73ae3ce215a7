/**
 * fix-idp-logout-floods-denylist (a hostile review of identity in, 2026-12-05): a logout with
 * an identity provider's access token denylists it until it expires — a row, a notification, an
 * entry in every replica's memory — and nothing bounded how many: whoever could get tokens from
 * a trusted provider at its rate (a client-credentials grant, a self-service signup) grew every
 * replica's denylist without end (1,500 logouts → 1,500 entries in 4.5 s). Such logouts now
 * count against a quota in the store, per issuer and subject and per issuer
 * (src/sessions/foreign-revocations.ts); beyond it the logout is a 429 and revokes nothing.
 *
 * A real OpenID provider's key signs the tokens (test/fixtures/idp.ts); the gateway runs on the
 * embedded store, the quota's per-issuer counter is driven through the store directly.
 * The limits are written out here, so this file also runs (and fails) against the code before.
 */
import t from 'tap'
import { randomUUID } from 'node:crypto'
import { baseConfig, goodClaims, makeKey, raw, signWith, startGateway } from '../fixtures/gateway.js'
import { IDP_RESOURCE, startIdp } from '../fixtures/idp.js'
import { startUpstream } from '../fixtures/upstream.js'
import { until } from '../fixtures/until.js'
import { idpIssuer, signAsIdp } from '../upstream/helpers.js'
import { openStore } from '../../src/sessions/store.js'

/** FOREIGN_REVOCATION_QUOTA in foreign-revocations.ts */
const PER_SUBJECT = 20
const PER_ISSUER = 2_000

const self = makeKey('EdDSA')
const idp = await startIdp()
t.teardown(() => idp.close())
const upstream = await startUpstream()
t.teardown(() => upstream.close())
const store = await openStore({ dataDir: 'memory://' })
t.teardown(() => store.close())
const gw = await startGateway(t, {
  ...baseConfig(self, [{ name: 'api', prefix: '/api', upstream: upstream.url, auth: 'required' }], { tokens: { refresh: { transport: 'body' } } }),
  issuers: [idpIssuer(idp)],
}, { store })
await until('the provider\'s keys', () => gw.gateway.runtime.issuers[0]!.keys.status.state === 'ready', 10_000)

const logout = async (token: string): Promise<{ status: number, code?: string, retryAfter?: string }> => {
  const res = await raw(gw.url, '/auth/logout', { method: 'POST', headers: [['authorization', `Bearer ${token}`], ['content-type', 'application/json']], body: '{}' })
  const code = res.body === '' ? undefined : (JSON.parse(res.body) as { code?: string }).code
  return { status: res.status, code, retryAfter: res.headers['retry-after'] as string | undefined }
}
const call = async (token: string): Promise<number> => (await raw(gw.url, '/api/x', { headers: [['authorization', `Bearer ${token}`]] })).status
const idpToken = (sub: string): string => signAsIdp(idp, { aud: IDP_RESOURCE, sub, jti: randomUUID() })

t.test('one subject\'s tokens: the quota, then 429 and nothing revoked', async (t) => {
  const statuses: number[] = []
  for (let i = 0; i < PER_SUBJECT; i++) statuses.push((await logout(idpToken('svc-flood'))).status)
  t.same(statuses, statuses.map(() => 204), `the first ${PER_SUBJECT} logouts revoke their tokens`)
  const over = idpToken('svc-flood')
  const refused = await logout(over)
  t.equal(refused.status, 429, 'the next is refused')
  t.equal(refused.code, 'too_many_attempts')
  t.ok(Number(refused.retryAfter) > 0, 'with Retry-After')
  t.equal(await call(over), 200, 'and its token was not revoked')
  t.equal((await logout(idpToken('svc-other'))).status, 204, 'another subject of the same issuer is not held back')
})

t.test('the gateway\'s own tokens are not counted', async (t) => {
  const statuses: number[] = []
  for (let i = 0; i < PER_SUBJECT + 5; i++) statuses.push((await logout(signWith(self, goodClaims({ sub: 'local-user', jti: randomUUID() })))).status)
  t.same(statuses, statuses.map(() => 204), 'every logout with the gateway\'s own token revokes it')
})

t.test('one issuer\'s tokens, whatever their subjects: the quota per issuer', async (t) => {
  // the counter itself, through a store like the gateway's: a logout per distinct subject
  const { countForeignRevocation } = await import('../../src/sessions/foreign-revocations.js')
  const counters = await openStore({ dataDir: 'memory://' })
  t.teardown(() => counters.close())
  const nowMs = Date.now()
  let allowed = 0
  for (let i = 0; i < PER_ISSUER; i++) {
    if (await counters.transaction(async (tx) => await countForeignRevocation(tx, 'corp', `user-${i}`, nowMs)) === undefined) allowed++
  }
  t.equal(allowed, PER_ISSUER, `${PER_ISSUER} subjects' logouts are allowed`)
  const wait = await counters.transaction(async (tx) => await countForeignRevocation(tx, 'corp', 'user-new', nowMs))
  t.ok(wait !== undefined && wait > 0, 'the next is refused, with a wait')
  t.equal(await counters.transaction(async (tx) => await countForeignRevocation(tx, 'partner', 'user-new', nowMs)), undefined, 'another issuer is not held back')
  const later = nowMs + 901_000
  t.equal(await counters.transaction(async (tx) => await countForeignRevocation(tx, 'corp', 'user-new', later)), undefined, 'after the window, allowed again')
})
