import t from 'tap'
import { hash, parseOptions } from '@node-rs/argon2'
import {
  checkPasswordLength, DUMMY_HASH, hashPassword, MAX_PASSWORD_BYTES, needsRehash, PASSWORD_HASH_OPTIONS, verifyPassword,
} from '../../src/sessions/passwords.js'
import {
  hasFamilyTag, hashRefreshToken, isWellFormedRefreshToken, newLegacyRefreshToken, newRefreshKey, newSessionId, newSessionRefreshToken,
  openSuccessor, parseRefreshToken, sealSuccessor,
} from '../../src/sessions/refresh-tokens.js'

t.test('the dummy hash uses today\'s parameters (else unknown users would be cheaper)', async (t) => {
  const o = parseOptions(DUMMY_HASH)
  t.match(o, { algorithm: PASSWORD_HASH_OPTIONS.algorithm, memoryCost: 19_456, timeCost: 2, parallelism: 1 })
  t.equal(needsRehash(DUMMY_HASH), false)
})

t.test('hash and verify', async (t) => {
  const h = await hashPassword('s3cret ✓')
  t.match(h, /^\$argon2id\$v=19\$m=19456,t=2,p=1\$/)
  t.equal(await verifyPassword(h, 's3cret ✓'), true)
  t.equal(await verifyPassword(h, 's3cret'), false)
  t.equal(await verifyPassword(undefined, 's3cret ✓'), false, 'dummy path never succeeds')
  t.equal(await verifyPassword('not a hash', 'x'), false, 'malformed stored hash is a failure, not a throw')
  const weak = await hash('x', { memoryCost: 4096, timeCost: 1, parallelism: 1 })
  t.equal(needsRehash(weak), true)
  t.equal(needsRehash('garbage'), true)
})

t.test('length bounds in bytes, checked before hashing', async (t) => {
  t.doesNotThrow(() => checkPasswordLength('x'))
  t.doesNotThrow(() => checkPasswordLength('x'.repeat(MAX_PASSWORD_BYTES)))
  t.throws(() => checkPasswordLength('x'.repeat(MAX_PASSWORD_BYTES + 1)), { code: 'password_too_long', statusCode: 413 })
  t.throws(() => checkPasswordLength('é'.repeat(513)), { code: 'password_too_long' }, '513 two-byte characters are 1026 bytes')
  t.throws(() => checkPasswordLength(''), { code: 'password_empty', statusCode: 400 })
  await t.rejects(hashPassword(''), { code: 'password_empty' })
})

t.test('refresh token material', async (t) => {
  const sid = newSessionId()
  const key = newRefreshKey()
  const a = newSessionRefreshToken(sid, key)
  t.match(a, /^[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{64}$/, '<sid>.<secret+tag>')
  t.ok(a.startsWith(sid + '.'), 'names its session')
  t.equal(Buffer.from(a.slice(23), 'base64url').length, 48, '32 random bytes + 16-byte tag')
  t.not(newSessionRefreshToken(sid, key), a)
  t.ok(isWellFormedRefreshToken(a))
  const parsed = parseRefreshToken(a)
  t.equal(parsed?.format, 'session')
  if (parsed?.format === 'session') {
    t.equal(parsed.sid, sid)
    t.ok(hasFamilyTag(parsed, key), 'the session key recognises its tokens')
    t.notOk(hasFamilyTag(parsed, newRefreshKey()), 'another key does not')
    const forged = parseRefreshToken(`${sid}.${Buffer.concat([parsed.secret, Buffer.alloc(16)]).toString('base64url')}`)
    t.ok(forged?.format === 'session' && !hasFamilyTag(forged, key), 'knowing the sid is not enough to forge one')
  }
  const legacy = newLegacyRefreshToken()
  t.match(legacy, /^[A-Za-z0-9_-]{43}$/)
  t.equal(parseRefreshToken(legacy)?.format, 'legacy', 'legacy tokens are still understood')
  for (const bad of ['', 'x', a + 'A', a.slice(1), `${sid}.${'A'.repeat(63)}`, `${sid}.${'A'.repeat(64)}=`, `${sid}:${'A'.repeat(64)}`, legacy + 'A', legacy.slice(1) + '=', 42, undefined]) {
    t.notOk(isWellFormedRefreshToken(bad), String(bad))
  }
  t.equal(hashRefreshToken(a).length, 43, 'sha-256 base64url')
  const successor = newSessionRefreshToken(sid, key)
  const sealed = sealSuccessor(a, successor)
  t.notOk(sealed.includes(successor))
  t.equal(openSuccessor(a, sealed), successor, 'the holder of the presented token opens it')
  t.equal(openSuccessor(newSessionRefreshToken(sid, key), sealed), undefined, 'any other token cannot')
  const raw = Buffer.from(sealed, 'base64url')
  raw[raw.length - 1] = (raw[raw.length - 1] ?? 0) ^ 1
  t.equal(openSuccessor(a, raw.toString('base64url')), undefined, 'tampering detected (GCM tag)')
  t.equal(openSuccessor(a, 'short'), undefined)
})
