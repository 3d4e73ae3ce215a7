/**
 * Regression (revocation review, 2026-12-05, finding 5): a refresh whose COMMIT answer was slow
 * or lost answered 503 "retry shortly" although the rotation had committed. The client that
 * retried — honouring Retry-After, or after a read timeout and a ROLLBACK queued behind the
 * unanswered COMMIT for another whole read timeout — presented the token the rotation had
 * spent, past the reuse grace: reuse detection took it for theft and revoked the session. A
 * login whose COMMIT answer was lost likewise answered 503 for a session it had made.
 *
 * Now the driver never sends ROLLBACK on a connection whose statement went unanswered (it is
 * destroyed, and the server rolls back what did not commit), reports a COMMIT without answer
 * as CommitOutcomeUnknownError, and login and refresh then look at the session row (locked,
 * so they wait for the lost transaction's real outcome): their new token there → the pair.
 *
 * The faults are real: PostgreSQL 15 behind test/fixtures/pg-fault-proxy.ts, which lets the
 * COMMIT through and withholds its answer (the server committed; the answer is lost), or
 * withholds the COMMIT itself (nothing committed; the server rolls back once the connection
 * goes). The client is modelled as the README's SDK behaves: a 503 → the same token again
 * after Retry-After (here past the grace, as it is after a slow answer); a pair → the new token.
 */
import t from 'tap'
import { CommitOutcomeUnknownError, StoreUnavailableError } from '../../src/sessions/errors.js'
import { hashRefreshToken } from '../../src/sessions/refresh-tokens.js'
import { SessionService } from '../../src/sessions/service.js'
import type { TokenPair } from '../../src/sessions/service.js'
import { openStore } from '../../src/sessions/store.js'
import { addUser } from '../../src/sessions/users.js'
import { PgFaultProxy } from '../fixtures/pg-fault-proxy.js'
import type { Stall } from '../fixtures/pg-fault-proxy.js'
import { pgAvailability, startPostgres } from '../fixtures/pg.js'
import { makeClock } from '../fixtures/sessions-clock.js'
import { makeTestSigner } from '../fixtures/sessions-signer.js'

const STATEMENT_TIMEOUT_MS = 200
/** the pool's client read timeout: statement_timeout + QUERY_TIMEOUT_MARGIN_MS (2 s) in pg-store.ts */
const READ_TIMEOUT_MS = STATEMENT_TIMEOUT_MS + 2_000
const REUSE_GRACE_SEC = 10
/** the client's retry after a 503: Retry-After (5 s) after an answer that itself took longer than the rest of the grace */
const RETRY_AFTER_SEC = REUSE_GRACE_SEC + 5

/** outcome of a promise, without throwing */
const settle = async <T>(p: Promise<T>): Promise<T | Error> => await p.catch((err: unknown) => err as Error)

const avail = pgAvailability()
if (!avail.available) {
  t.plan(0, avail.reason)
} else {
  const cluster = await startPostgres(t)
  await cluster.createDatabase('commit_lost')
  const proxy = new PgFaultProxy(cluster.port)
  await proxy.start()
  const store = await openStore({ url: proxy.url('commit_lost'), statementTimeoutMs: STATEMENT_TIMEOUT_MS, lockTimeoutMs: 1_000 })
  // the proxy first: a pool client whose answer it still holds is released only when its socket goes
  t.teardown(async () => { await proxy.close(); await store.close() })
  const clock = makeClock()
  const svc = new SessionService({ store, clock, signAccessToken: makeTestSigner(clock).sign, options: { reuseGraceSec: REUSE_GRACE_SEC } })
  await addUser(store, { name: 'alice', password: 'pw-alice' }, clock())

  /** the next COMMIT on a pooled connection stalls; returns a check that it did, and cuts that connection loose */
  const commitOfNext = (hold: Stall['hold']): () => boolean => {
    const before = new Set(proxy.stalled())
    proxy.stallNext({ app: 'portcullis', match: /^COMMIT$/, hold })
    return () => {
      const caught = proxy.stalled().filter((c) => !before.has(c))
      for (const c of caught) c.client.destroy()
      return caught.length === 1
    }
  }
  /** how the session's row reads now: is `token` its current refresh token, is it revoked */
  const rowOf = async (pair: TokenPair, token: string): Promise<{ current: boolean, revoked: boolean }> => {
    const refresh = await store.getSessionRefresh(pair.sid)
    const session = await store.getSession(pair.sid)
    return { current: refresh?.hash === hashRefreshToken(token), revoked: session?.revokedAt !== null }
  }

  const refreshCases = [
    { name: 'the COMMIT reaches the server and its answer is lost', hold: 'answer' as const, rotated: true },
    { name: 'the COMMIT never reaches the server', hold: 'query' as const, rotated: false },
  ]
  for (const c of refreshCases) {
    t.test(`refresh: ${c.name}`, async (t) => {
      const login = await svc.login('alice', 'pw-alice')
      const caught = commitOfNext(c.hold)
      const startMs = performance.now()
      const first = await settle(svc.refresh(login.refreshToken))
      const tookMs = performance.now() - startMs
      t.ok(caught(), 'the refresh\'s COMMIT was caught')

      if (c.rotated) {
        t.notOk(first instanceof Error, `the rotation committed: the client gets its pair (${first instanceof Error ? first.message : 'pair'})`)
      } else {
        t.ok(first instanceof StoreUnavailableError, 'nothing committed: 503, the client retries')
      }
      // no ROLLBACK queued behind the unanswered COMMIT for a second read timeout
      t.ok(tookMs < 2 * READ_TIMEOUT_MS, `answered within one read timeout and the look (${tookMs.toFixed(0)} ms, read timeout ${READ_TIMEOUT_MS} ms)`)

      // the client: a pair → its new token; a 503 → the same token after Retry-After
      const held = first instanceof Error ? login.refreshToken : first.refreshToken
      t.same(await rowOf(login, held), { current: true, revoked: false }, 'the token the client holds is the session\'s current one')
      clock.advanceSec(RETRY_AFTER_SEC)
      const next = await settle(svc.refresh(held))
      t.notOk(next instanceof Error, `the client's next refresh succeeds (${next instanceof Error ? (next as { reason?: string }).reason ?? next.message : 'pair'})`)
      t.same(await rowOf(login, next instanceof Error ? held : next.refreshToken), { current: true, revoked: false }, 'the session lives on')
    })
  }

  t.test('login: the COMMIT reaches the server and its answer is lost', async (t) => {
    const caught = commitOfNext('answer')
    const first = await settle(svc.login('alice', 'pw-alice'))
    t.ok(caught(), 'the login\'s COMMIT was caught')
    if (first instanceof Error) {
      t.fail(`the session was made: the client gets its pair (${first.message})`)
      return
    }
    t.pass('the session was made: the client gets its pair')
    t.same(await rowOf(first, first.refreshToken), { current: true, revoked: false }, 'its refresh token is the session\'s current one')
    t.notOk(await settle(svc.refresh(first.refreshToken)) instanceof Error, 'and it refreshes')
  })

  t.test('a COMMIT whose outcome is not known stays a 503 for everyone else', async (t) => {
    // the error class callers switch on is still the store's 503
    t.ok(new CommitOutcomeUnknownError() instanceof StoreUnavailableError, 'CommitOutcomeUnknownError is a StoreUnavailableError')
    t.equal(new CommitOutcomeUnknownError().statusCode, 503)
  })
}
