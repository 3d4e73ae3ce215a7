/**
 * The demo page: the portcullis client SDK in a page, no framework. Everything the page
 * knows about the session comes from the SDK's two events (tokenChanged, sessionEnded);
 * the countdown reads the expiry the SDK estimated for the token it holds.
 */
import {
  DEFAULT_REFRESH_MARGIN_SEC, InvalidCredentialsError, SessionEndedError, TooManyAttemptsError, WS_POLICY_VIOLATION, createClient,
} from './sdk/index.js'

// the gateway is this page's own origin (route demo-app), so no baseUrl; autoRefresh: the
// token is renewed on a timer when the margin is reached, not only when a call needs it
const client = createClient({ transport: 'cookie', autoRefresh: true })

const $ = (id) => document.getElementById(id)
let token // { expiresAtMs, lifetimeMs } of the access token in use
let refreshes = 0

function fmt (ms) {
  const s = Math.ceil(ms / 1000)
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`
}

function log (list, text, kind = '') {
  const li = document.createElement('li')
  const time = document.createElement('time')
  time.textContent = new Date().toLocaleTimeString([], { hour12: false })
  const span = document.createElement('span')
  span.textContent = text
  if (kind !== '') span.className = kind
  li.append(time, span)
  $(list).prepend(li)
}
const event = (text, kind) => { log('events', text, kind) }

function showSession () {
  const active = client.status === 'active'
  $('login-form').hidden = active
  $('signed-in').hidden = !active
  for (const el of document.querySelectorAll('[data-needs-session]')) el.disabled = !active
  $('ws-open').disabled = !active || socket !== undefined
  const claims = client.claims() ?? {}
  $('who').textContent = claims.preferred_username ?? claims.sub ?? '—'
  $('scopes').textContent = claims.scope ?? '—'
  $('sid').textContent = typeof claims.sid === 'string' ? `${claims.sid.slice(0, 8)}…` : '—'
  // the proof of cookie mode: document.cookie lists no refresh token (HttpOnly)
  $('cookie-view').textContent = document.cookie.includes('portcullis-rt') ? document.cookie : 'nothing'
}

client.on('tokenChanged', (e) => {
  const claims = client.claims() ?? {}
  const lifetimeMs = typeof claims.exp === 'number' && typeof claims.iat === 'number' ? (claims.exp - claims.iat) * 1000 : undefined
  token = { expiresAtMs: e.expiresAtMs, lifetimeMs }
  if (e.source === 'login') event(`logged in: new access token, valid ${lifetimeMs === undefined ? '?' : fmt(lifetimeMs)}`, 'good')
  else {
    refreshes++
    event(e.source === 'refresh' ? 'refreshed: new access token (the old refresh token is now spent)' : 'another tab refreshed: adopted its access token', 'good')
  }
  $('refresh-count').textContent = String(refreshes)
  showSession()
  tick()
})

const ENDED = {
  logout: 'logged out',
  logout_all: 'logged out everywhere: every session of this user',
  invalid_grant: 'the gateway ended the session (revoked, expired, or its refresh token reused)',
  no_session: 'no session to resume: log in',
}
client.on('sessionEnded', (e) => {
  token = undefined
  event(`${ENDED[e.reason] ?? e.reason}${e.fromOtherTab ? ' (in another tab)' : ''}`, e.reason === 'no_session' ? '' : 'bad')
  showSession()
  tick()
})

// the countdown: time left on the access token, and when the SDK will replace it
function tick () {
  const life = $('life')
  const margin = $('margin')
  if (token?.expiresAtMs === undefined) {
    $('remaining').textContent = '—'
    $('next-refresh').textContent = 'after login'
    life.style.width = margin.style.width = '0'
    return
  }
  const lifetimeMs = token.lifetimeMs ?? 1
  const leftMs = Math.max(0, token.expiresAtMs - Date.now())
  // the SDK's rule (src/client/token.ts): the margin, at most a quarter of the lifetime
  const marginMs = Math.min(DEFAULT_REFRESH_MARGIN_SEC * 1000, lifetimeMs / 4)
  $('remaining').textContent = fmt(leftMs)
  $('remaining').parentElement.classList.toggle('due', leftMs <= marginMs)
  $('next-refresh').textContent = leftMs > marginMs ? `in ${fmt(leftMs - marginMs)} (${fmt(marginMs)} before expiry)` : 'due now'
  life.style.width = `${Math.min(100, (100 * leftMs) / lifetimeMs)}%`
  margin.style.width = `${(100 * marginMs) / lifetimeMs}%`
}
setInterval(tick, 250)

$('login-form').addEventListener('submit', async (ev) => {
  ev.preventDefault()
  const form = ev.currentTarget
  $('login-error').textContent = ''
  try {
    await client.login(form.username.value, form.password.value)
    form.password.value = ''
  } catch (err) {
    $('login-error').textContent = err instanceof InvalidCredentialsError
      ? 'wrong user name or password'
      : err instanceof TooManyAttemptsError ? `too many attempts: try again in ${err.retryAfterSec ?? '?'} s` : err.message
  }
})

$('logout').addEventListener('click', () => { client.logout().catch((err) => event(`logout: ${err.message}`, 'bad')) })
$('logout-all').addEventListener('click', () => { client.logoutAll().catch((err) => event(`logout everywhere: ${err.message}`, 'bad')) })
$('refresh').addEventListener('click', () => { client.refresh().catch((err) => event(`refresh: ${err.message}`, 'bad')) })

// an API call: the SDK adds the token, refreshes first when due, and once more on "expired"
for (const button of document.querySelectorAll('[data-path]')) {
  button.addEventListener('click', async () => {
    const path = button.dataset.path
    const out = $('api-out')
    try {
      const res = await client.fetch(path)
      const body = await res.text()
      let lines = [`GET ${path} → ${res.status}`]
      try {
        const echo = JSON.parse(body)
        const headers = echo.headers ?? {}
        lines.push(...Object.keys(headers).filter((h) => h.startsWith('x-user-') || h === 'x-request-id').map((h) => `${h}: ${headers[h]}`))
        lines.push(`authorization: ${headers.authorization ?? '(not forwarded)'}`)
      } catch {
        lines = [...lines, body]
      }
      out.textContent = lines.join('\n')
    } catch (err) {
      out.textContent = err instanceof SessionEndedError ? 'the session has ended: log in again' : `${err.name}: ${err.message}`
    }
  })
}

// the WebSocket: the token travels as a subprotocol, never in the URL; the gateway closes
// the socket (1008) when that token expires or is revoked, and the page reconnects with a
// fresh one while the session lasts
let socket
let wantOpen = false
// closes by the gateway in a row, for the reconnect's backoff (the README's recipe)
let failures = 0

function socketState (state) {
  $('ws-state').textContent = state
  $('ws-state').classList.toggle('open', state.startsWith('open'))
  $('ws-close').disabled = socket === undefined
  $('ws-open').disabled = socket !== undefined || client.status !== 'active'
  $('ws-send').disabled = !state.startsWith('open')
}

async function connect () {
  wantOpen = true
  let ws
  try {
    ws = await client.webSocket('/api/live')
  } catch (err) {
    wantOpen = false
    log('ws-log', err instanceof SessionEndedError ? 'the session has ended: log in again' : err.message, 'bad')
    return
  }
  socket = ws
  const openedAtMs = Date.now()
  socketState('connecting')
  ws.addEventListener('open', () => { socketState(`open · protocol ${ws.protocol}`) })
  ws.addEventListener('message', (e) => {
    const m = JSON.parse(e.data)
    log('ws-log', m.type === 'welcome' ? `upstream: welcome, user ${m.user} (${m.scopes})` : `upstream: echo "${m.text}"`)
  })
  ws.addEventListener('close', (e) => {
    socket = undefined
    socketState('closed')
    const revoked = e.code === WS_POLICY_VIOLATION
    log('ws-log', revoked ? `closed by the gateway: ${e.reason} (1008)` : `closed (${e.code})`, revoked ? 'bad' : '')
    if (revoked && wantOpen) {
      // bounded, jittered backoff: a socket refused again at once (a revoked user, a reload
      // that withdrew the route) must not make the page hammer the gateway; one that lived a
      // minute starts afresh
      failures = Date.now() - openedAtMs > 60_000 ? 0 : failures + 1
      const delayMs = Math.min(30_000, 250 * 2 ** failures) * (0.5 + Math.random() / 2)
      setTimeout(() => { if (wantOpen && client.status === 'active') connect() }, delayMs)
    }
  })
}

$('ws-open').addEventListener('click', () => { if (socket === undefined) connect() })
$('ws-close').addEventListener('click', () => { wantOpen = false; socket?.close(1000, 'bye') })
$('ws-form').addEventListener('submit', (ev) => {
  ev.preventDefault()
  const text = ev.currentTarget.text.value
  socket?.send(text)
  log('ws-log', `sent "${text}"`)
})
client.on('sessionEnded', () => { wantOpen = false })

// a reload keeps the session: the HttpOnly cookie is still there, the SDK refreshes with it
event('page loaded: resuming the session from the cookie…')
client.restore().catch((err) => event(`the gateway did not answer: ${err.message}`, 'bad'))
