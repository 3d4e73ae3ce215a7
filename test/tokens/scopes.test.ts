import t from 'tap'
import { SCOPE_TOKEN, scopeSet } from '../../src/tokens/scopes.js'
import { identityHeaders } from '../../src/tokens/identity.js'

// scopeSet tests a whole well-formed list once and splits it; anything else is sorted scope
// by scope. Both ways must grant exactly the scope tokens of the string, one by one.
const reference = (s: string): string[] => [...new Set(s.split(' ').filter(x => SCOPE_TOKEN.test(x)))]

t.test('scopeSet grants exactly the scope tokens of a string, well-formed or not', async (t) => {
  const pieces = ['orders:read', 'a', '', ' ', '  ', '"q"', 'back\\slash', 'tab\there', 'caf\u00e9', '\u0000', 'x\u007f', '!#[]~', 'new\nline']
  const cases: string[] = ['', ' ', 'orders:read', 'orders:read orders:write', 'a a a', ' orders:read', 'orders:read ', 'a  b']
  for (const a of pieces) for (const b of pieces) for (const c of ['', ' ', 'z']) cases.push(`${a} ${b}${c}`, `${a}${c}${b}`)
  let checked = 0
  for (const s of cases) {
    const got = [...(scopeSet(s, false) ?? ['(undefined)'])]
    if (got.join('\n') !== reference(s).join('\n')) t.fail(`scopeSet(${JSON.stringify(s)}) = ${JSON.stringify(got)}, expected ${JSON.stringify(reference(s))}`)
    else checked++
  }
  t.equal(checked, cases.length, `${checked} strings gave exactly their scope tokens`)
  t.same([...scopeSet('orders:read "orders:admin" orders:write', false)!], ['orders:read', 'orders:write'], 'a quoted element grants nothing, the rest is kept')
  t.same([...scopeSet(['a', 'b c'], true)!], ['a'], 'arrays: an element with a space grants nothing')
  t.equal(scopeSet(['a'], false), undefined, 'an array where only strings are accepted')
})

t.test('the scope identity header lists the granted scopes one space apart', async (t) => {
  const identity = { mappings: [{ path: ['scope'], header: 'x-user-scopes' }], claimsHeader: '', maxHeaderBytes: 8192 } as any
  t.same(identityHeaders({ scope: 'x' }, identity, scopeSet('a  b a\tz c', false)!), [['x-user-scopes', 'a b c']])
  t.same(identityHeaders({}, identity, new Set()), [], 'no scopes: no header')
})
