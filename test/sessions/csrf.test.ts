import t from 'tap'
import { checkCookieRequest, createCookieRequestCheck, isJsonContentType } from '../../src/sessions/csrf.js'
import type { CookieRequestHeaders } from '../../src/sessions/csrf.js'

const opts = { allowedOrigins: ['https://app.example.test', 'http://localhost:5173'] }
const base: CookieRequestHeaders = {
  method: 'POST',
  contentType: 'application/json',
  origin: 'https://app.example.test',
  secFetchSite: 'same-site',
  host: 'api.example.test',
  proto: 'https',
}

const rows: Array<[string, Partial<CookieRequestHeaders>, string | undefined]> = [
  ['allowed origin', {}, undefined],
  ['allowed origin with explicit default port', { origin: 'https://app.example.test:443' }, undefined],
  ['allowed origin, other case', { origin: 'HTTPS://APP.example.test' }, undefined],
  ['dev origin with port', { origin: 'http://localhost:5173' }, undefined],
  ['same origin', { origin: 'https://api.example.test', secFetchSite: 'same-origin' }, undefined],
  ['same origin behind non-default port', { origin: 'http://127.0.0.1:8080', host: '127.0.0.1:8080', proto: 'http' }, undefined],
  ['no fetch metadata (older browser)', { secFetchSite: undefined }, undefined],
  ['charset utf-8', { contentType: 'application/json; charset=utf-8' }, undefined],
  ['charset quoted, upper case', { contentType: 'Application/JSON;Charset="UTF-8"' }, undefined],
  ['GET', { method: 'GET' }, 'method_not_allowed'],
  ['PUT', { method: 'PUT' }, 'method_not_allowed'],
  ['form post', { contentType: 'application/x-www-form-urlencoded' }, 'unsupported_media_type'],
  ['text/plain (simple request)', { contentType: 'text/plain' }, 'unsupported_media_type'],
  ['multipart', { contentType: 'multipart/form-data; boundary=x' }, 'unsupported_media_type'],
  ['no content type', { contentType: undefined }, 'unsupported_media_type'],
  ['json lookalike', { contentType: 'application/json-patch+json' }, 'unsupported_media_type'],
  ['other charset', { contentType: 'application/json; charset=latin1' }, 'unsupported_media_type'],
  ['extra parameter', { contentType: 'application/json; foo=bar' }, 'unsupported_media_type'],
  ['no origin', { origin: undefined }, 'csrf_origin'],
  ['origin null', { origin: 'null' }, 'csrf_origin'],
  ['foreign origin', { origin: 'https://evil.example' }, 'csrf_origin'],
  ['suffix trick', { origin: 'https://app.example.test.evil.example' }, 'csrf_origin'],
  ['scheme downgrade', { origin: 'http://app.example.test' }, 'csrf_origin'],
  ['not an origin', { origin: 'javascript:alert(1)' }, 'csrf_origin'],
  ['same host other port is another origin', { origin: 'https://api.example.test:8443', secFetchSite: 'same-site' }, 'csrf_origin'],
  ['cross-site fetch metadata', { secFetchSite: 'cross-site' }, 'csrf_fetch_site'],
  ['cross-site upper case', { secFetchSite: 'Cross-Site' }, 'csrf_fetch_site'],
]

const statusOf: Record<string, number> = { method_not_allowed: 405, unsupported_media_type: 415, csrf_origin: 403, csrf_fetch_site: 403 }

t.test('cookie request checks, one row per case', async (t) => {
  const check = createCookieRequestCheck(opts)
  for (const [name, patch, want] of rows) {
    const r = check({ ...base, ...patch })
    if (want === undefined) {
      t.same(r, { ok: true }, name)
    } else {
      t.match(r, { ok: false, error: { code: want, statusCode: statusOf[want] } }, name)
    }
  }
  t.same(checkCookieRequest(base, opts), { ok: true }, 'one-shot form agrees')
})

t.test('bad configuration fails at build time', async (t) => {
  t.throws(() => createCookieRequestCheck({ allowedOrigins: ['app.example.test'] }), TypeError)
})

t.test('isJsonContentType', async (t) => {
  t.equal(isJsonContentType('application/json;'), true)
  t.equal(isJsonContentType(' application/json '), true)
  t.equal(isJsonContentType('application/jsonx'), false)
})
