import t, { type Test } from 'tap'
import { execFile } from 'node:child_process'
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { stringify } from 'yaml'
import { loadConfigText } from '../../src/config/load.js'
import { explainRequest, offlineRuntime, type Explanation, type ExplainRequest } from '../../src/explain/explain.js'
import { formatExplanation } from '../../src/explain/format.js'
import { baseConfig, goodClaims, makeKey, signWith } from '../fixtures/gateway.js'
import { ROOT } from '../fixtures/process.js'
import { PROCESS_WAIT_MS } from '../fixtures/until.js'

// `portcullis explain` printed, in its text and its --json, credentials a client sends in
// headers other than Authorization: X-Api-Key, every cookie but the refresh one, the headers
// other auth proxies put tokens in (X-Amzn-Oidc-Accesstoken, X-Forwarded-Access-Token), which
// the gateway itself strips, and a WebSocket subprotocol token. Its output goes to terminals,
// tickets and CI logs. Now every cookie value, every header the gateway strips as identity or
// credentials, every Sec-WebSocket-Protocol entry but the marker, and every header whose name
// says it holds a secret are printed `<redacted>`, on the request and on the upstream side.
// And `--token -` reads the token from stdin, out of `ps` and shell history.

const key = makeKey('EdDSA')
const config = baseConfig(key, [{ name: 'orders', prefix: '/api/orders', upstream: 'http://127.0.0.1:9', auth: 'required' }], {
  identity: { headers: { sub: 'x-user-id', scope: 'x-user-scopes' } },
})
const token = signWith(key, goodClaims({ sub: 'alice', scope: 'orders:read' }))

async function explainer (t: Test): Promise<(req: ExplainRequest) => Promise<Explanation>> {
  const { runtime, close } = offlineRuntime(loadConfigText(stringify(config), { env: {} }))
  t.teardown(close)
  return async (req) => await explainRequest(runtime, req, Date.now())
}

/** both forms explain prints */
const printed = (ex: Explanation): string => formatExplanation(ex) + JSON.stringify(ex)

// one row per way a credential reached the output; `shown` is how the request line reads now
const rows: Array<{ header: [string, string], secret: string, shown: RegExp }> = [
  { header: ['X-Api-Key', 'SECRET_API_KEY'], secret: 'SECRET_API_KEY', shown: /X-Api-Key: <redacted>/ },
  { header: ['X_Api_Key', 'SECRET_UNDERSCORE_KEY'], secret: 'SECRET_UNDERSCORE_KEY', shown: /X_Api_Key: <redacted>/ },
  { header: ['X-Auth-Token', 'SECRET_AUTH_TOKEN'], secret: 'SECRET_AUTH_TOKEN', shown: /X-Auth-Token: <redacted>/ },
  { header: ['X-Session-Id', 'SECRET_SESSION'], secret: 'SECRET_SESSION', shown: /X-Session-Id: <redacted>/ },
  { header: ['X-Client-Secret', 'SECRET_CLIENT'], secret: 'SECRET_CLIENT', shown: /X-Client-Secret: <redacted>/ },
  { header: ['X-Db-Password', 'SECRET_PASSWORD'], secret: 'SECRET_PASSWORD', shown: /X-Db-Password: <redacted>/ },
  { header: ['Cookie', '__Host-portcullis-rt=SECRET_RT_COOKIE; session=SECRET_OTHER_COOKIE'], secret: 'SECRET_OTHER_COOKIE', shown: /Cookie: __Host-portcullis-rt=<redacted>; session=<redacted>/ },
  { header: ['Cookie', 'theme=SECRET_THEME; SECRET_NAMELESS'], secret: 'SECRET_', shown: /Cookie: theme=<redacted>; <redacted>/ },
  { header: ['Sec-WebSocket-Protocol', 'bearer, SECRET_WS_TOKEN'], secret: 'SECRET_WS_TOKEN', shown: /Sec-WebSocket-Protocol: <redacted>, <redacted>/ },
  { header: ['Sec-WebSocket-Protocol', 'portcullis, portcullis.bearer.SECRET_WS_BEARER, chat'], secret: 'SECRET_WS_BEARER', shown: /Sec-WebSocket-Protocol: portcullis, portcullis\.bearer\.<redacted>, <redacted>/ },
  // the gateway's own strip list (pipeline/headers.ts): other proxies' identity and tokens
  { header: ['X-Amzn-Oidc-Accesstoken', 'SECRET_ALB'], secret: 'SECRET_ALB', shown: /X-Amzn-Oidc-Accesstoken: <redacted>/ },
  { header: ['X_Amzn_Oidc_Data', 'SECRET_ALB_DATA'], secret: 'SECRET_ALB_DATA', shown: /X_Amzn_Oidc_Data: <redacted>/ },
  { header: ['X-Forwarded-Access-Token', 'SECRET_XFAT'], secret: 'SECRET_XFAT', shown: /X-Forwarded-Access-Token: <redacted>/ },
  { header: ['X-Ms-Token-Aad-Id-Token', 'SECRET_AAD'], secret: 'SECRET_AAD', shown: /X-Ms-Token-Aad-Id-Token: <redacted>/ },
  { header: ['X-Auth-Request-Email', 'SECRET_OAUTH2_PROXY'], secret: 'SECRET_OAUTH2_PROXY', shown: /X-Auth-Request-Email: <redacted>/ },
  { header: ['X-User-Id', 'SECRET_SPOOFED_ID'], secret: 'SECRET_SPOOFED_ID', shown: /X-User-Id: <redacted>/ },
  // what was already redacted stays so
  { header: ['Authorization', 'Basic U0VDUkVUX0JBU0lDOnB3'], secret: 'U0VDUkVUX0JBU0lDOnB3', shown: /Authorization: Basic <redacted>/ },
  { header: ['Proxy-Authorization', 'Bearer SECRET_PROXY_AUTH'], secret: 'SECRET_PROXY_AUTH', shown: /Proxy-Authorization: Bearer <redacted>/ },
  { header: ['X-Debug', 'eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.'], secret: 'eyJzdWIiOiJ4In0', shown: /X-Debug: <redacted token>/ },
]

t.test('fix-explain-prints-credentials: no credential header is printed, on a refused request', async (t) => {
  const explain = await explainer(t)
  for (const row of rows) {
    const ex = await explain({ method: 'GET', url: '/api/orders/1', headers: [row.header] })
    const out = printed(ex)
    t.notOk(out.includes(row.secret), `${row.header[0]}: ${row.secret} is not printed`)
    t.match(formatExplanation(ex), row.shown, `${row.header[0]}: shown as ${row.shown.source}`)
  }
})

t.test('fix-explain-prints-credentials: nor on a granted one, where the upstream headers are shown too', async (t) => {
  const explain = await explainer(t)
  for (const row of rows.filter(r => r.header[0] !== 'Authorization')) {
    const ex = await explain({ method: 'GET', url: '/api/orders/1', headers: [row.header], token })
    t.equal(ex.decision.outcome, 'proxied', `${row.header[0]}: proxied`)
    t.notOk(printed(ex).includes(row.secret), `${row.header[0]}: ${row.secret} is printed on neither side`)
  }
  const ex = await explain({
    method: 'GET',
    url: 'https://api.test/api/orders/1',
    headers: [['X-Api-Key', 'SECRET_API_KEY'], ['Cookie', 'a=SECRET_A; b=SECRET_B'], ['X-User-Id', 'mallory'], ['Accept', 'application/json'], ['X-Custom', 'kept']],
    token,
  })
  const request = Object.fromEntries(ex.request.headers)
  t.same(request, { Host: 'api.test', 'X-Api-Key': '<redacted>', Cookie: 'a=<redacted>; b=<redacted>', 'X-User-Id': '<redacted>', Accept: 'application/json', 'X-Custom': 'kept', Authorization: 'Bearer <redacted>' }, 'the request: credentials redacted, names and other headers as sent')
  const upstream = Object.fromEntries(ex.upstream!.headers)
  t.equal(upstream['x-api-key'], '<redacted>', 'an API key the upstream gets is not printed')
  t.equal(upstream.cookie, 'a=<redacted>; b=<redacted>', 'nor the cookies it gets (their names are)')
  t.equal(upstream['x-user-id'], 'alice', 'the identity the gateway sets is shown: it is what explain explains')
  t.equal(upstream['x-user-scopes'], 'orders:read')
  t.equal(upstream.accept, 'application/json', 'other headers as they are')
  t.equal(upstream['x-custom'], 'kept')
  t.equal(upstream['x-forwarded-host'], 'api.test')
})

t.test('fix-explain-prints-credentials: nor a credential in the query, on the request line or the upstream URL', async (t) => {
  // a public route passes `access_token` on (it is refused only where a token is read)
  const { runtime, close } = offlineRuntime(loadConfigText(stringify(baseConfig(key, [{ name: 'pub', prefix: '/pub', upstream: 'http://127.0.0.1:9', auth: 'public' }])), { env: {} }))
  t.teardown(close)
  const ex = await explainRequest(runtime, { method: 'GET', url: `/pub/x?access_token=SECRET_QUERY_TOKEN&api_key=SECRET_QUERY_KEY&sig=SECRET_SAS&page=2&t=${token}`, headers: [] }, Date.now())
  t.equal(ex.decision.outcome, 'proxied', 'proxied')
  for (const secret of ['SECRET_QUERY_TOKEN', 'SECRET_QUERY_KEY', 'SECRET_SAS', token.split('.')[1] as string]) t.notOk(printed(ex).includes(secret), `${secret.slice(0, 20)} is not printed`)
  t.equal(ex.request.target, '/pub/x?access_token=<redacted>&api_key=<redacted>&sig=<redacted>&page=2&t=<redacted token>', 'names and other parameters as sent')
  t.match(ex.upstream!.url, /\/pub\/x\?access_token=<redacted>&api_key=<redacted>&sig=<redacted>&page=2&t=<redacted token>$/, 'the upstream URL alike')
})

interface Run { code: number | null, stdout: string, stderr: string }

function cli (args: string[], stdin: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, ['--import', 'tsx', 'src/cli.ts', ...args], { cwd: ROOT, timeout: PROCESS_WAIT_MS, env: { ...process.env, NODE_OPTIONS: '' } }, (err, stdout, stderr) => {
      const e = err as (NodeJS.ErrnoException & { code?: number | string }) | null
      resolve({ code: e === null ? 0 : typeof e.code === 'number' ? e.code : null, stdout, stderr })
    })
    child.stdin?.end(stdin)
  })
}

t.test('fix-explain-prints-credentials: --token - reads the token from stdin', async (t) => {
  const file = join(t.testdir({}), 'gateway.yaml')
  writeFileSync(file, stringify(config))
  const run = await cli(['explain', '-c', file, 'GET', '/api/orders/1', '--token', '-', '-H', 'X-Api-Key: SECRET_API_KEY'], `${token}\n`)
  t.equal(run.code, 0, `proxied: exit 0 (stderr: ${run.stderr})`)
  t.match(run.stdout, /token\s+verified: issuer self, sub alice/, 'the token from stdin was verified')
  t.match(run.stdout, /Authorization: Bearer <redacted>/)
  t.notOk(run.stdout.includes(token) || run.stdout.includes('SECRET_API_KEY'), 'neither it nor the API key is printed')

  const crlf = await cli(['explain', '-c', file, 'GET', '/api/orders/1', '--token', '-', '--json'], `${token}\r\n`)
  t.equal(crlf.code, 0, 'a CRLF after it is dropped')
  t.equal(JSON.parse(crlf.stdout).credentials.sub, 'alice')

  const empty = await cli(['explain', '-c', file, 'GET', '/api/orders/1', '--token', '-'], '\n')
  t.equal(empty.code, 2, 'nothing on stdin: a usage error')
  t.match(empty.stderr, /--token -: no token on standard input/)
  t.match((await cli(['explain', '--help'], '')).stderr + (await cli(['--help'], '')).stdout, /--token -/, 'documented in the usage')
})
