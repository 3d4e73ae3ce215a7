import t from 'tap'
import { Denylist } from '../../src/pipeline/denylist.js'
import { SessionService } from '../../src/sessions/service.js'
import { addUser } from '../../src/sessions/users.js'
import { usersDisable } from '../../src/sessions/admin-commands.js'
import { backends } from '../fixtures/sessions-backends.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

// Found by an adversarial review after issue 9: revocation entries lived `now + access TTL +
// skew`, the TTL and skew of the configuration the session service (or the CLI: its default
// TTL) was built with. Tokens that verify longer than that came back to life once the entry
// was pruned:
// - a reload that lengthens accessTokenTtl (1m → 15m) signs 15-minute tokens, while logout-all
//   kept writing 90-second entries: 95 s later the revoked token was accepted again;
// - an identity provider's token is accepted until exp + that issuer's skew (up to 5 min),
//   but its logout kept the jti until exp + the gateway's own skew (30 s).
// Entries are now sized by what any configuration may accept: a token of the gateway lives
// at most 1 h, a skew is at most 5 min (src/sessions/revoke.ts).

const b = backends(t)
if (b.skipped !== undefined) t.comment(b.skipped)

for (const name of ['postgres', 'embedded'] as const) {
  t.test(name, { skip: b.names.includes(name) ? false : b.skipped }, async (t) => {
    const store = await b.open(name, t)
    const clock = makeClock()
    // the service was built with a 1-minute TTL and 30 s skew; the signer is the reloaded
    // configuration's, with 15-minute tokens
    const signer = makeTestSigner(clock, 900)
    const service = new SessionService({ store, clock, signAccessToken: signer.sign, options: { accessTokenTtlSec: 60, clockSkewSec: 30 } })
    await addUser(store, { name: 'alice', password: 'pw-alice', scopes: ['orders:read'] }, clock())
    await addUser(store, { name: 'bob', password: 'pw-bob', scopes: ['orders:read'] }, clock())
    const client = { ip: '203.0.113.7', userAgent: 'tap' }

    /** the denylist a replica holds after `sec` more seconds and a prune */
    const denylistAfter = async (sec: number): Promise<Denylist> => {
      clock.advanceSec(sec)
      const denylist = new Denylist()
      denylist.replace(await store.loadRevocations(new Date(clock())))
      denylist.prune(Math.floor(clock() / 1000))
      return denylist
    }

    t.test('logout everywhere covers a token signed with a longer TTL than the service knew', async (t) => {
      const pair = await service.login('alice', 'pw-alice', client)
      // the test signer leaves iat out of the token; it signed at the clock's now
      const claims: Record<string, unknown> = { ...signer.verify(pair.accessToken), iat: Math.floor(clock() / 1000) }
      t.equal((claims.exp as number) - (claims.iat as number), 900, 'a 15-minute token')
      await service.logoutAll(claims.sub as string)
      const after95 = await denylistAfter(95)
      t.ok(after95.check(claims) !== undefined, '95 s later (past 60 s + 30 s) the token is still refused')
      const near = await denylistAfter(900 - 95 + 29)
      t.ok(near.check(claims) !== undefined, 'until its own exp + skew')
    })

    t.test('an operator disabling a user from the CLI (default TTL) covers the same', async (t) => {
      const pair = await service.login('bob', 'pw-bob', client)
      const claims: Record<string, unknown> = { ...signer.verify(pair.accessToken), iat: Math.floor(clock() / 1000) }
      await usersDisable(store, 'bob', { clock })
      t.ok((await denylistAfter(700)).check(claims) !== undefined, 'refused past the CLI\'s 10-minute default TTL')
    })

    t.test('a jti is kept past exp for an issuer whose skew is larger than the gateway\'s own', async (t) => {
      const exp = Math.floor(clock() / 1000) + 60
      const idpClaims = { iss: 'https://idp.example.test', sub: 'carol', jti: 'idp-token-1', iat: exp - 60, exp }
      await service.logout(undefined, idpClaims)
      // an issuer with clockSkew: 5m accepts the token until exp + 300
      t.equal((await denylistAfter(60 + 96)).check(idpClaims), 'token_revoked', '96 s past exp: still revoked')
      t.equal((await denylistAfter(300 - 96 - 1)).check(idpClaims), 'token_revoked', 'up to exp + 5 min')
    })
  })
}
