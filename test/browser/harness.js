/**
 * The browser suite's page script: one SDK client in cookie mode against the gateway named
 * in `?gateway=`, and `globalThis.harness`, the functions the tests call with page.evaluate.
 * Results are plain data (errors as {name, code, status, reason}) so they cross into Node.
 *
 * The SDK's clock is Date.now() plus an offset the test moves (`advanceClock`): the SDK
 * then believes its token is older than it is, which is how the suite reaches a proactive
 * refresh without waiting minutes. Only the SDK's view moves; the gateway keeps its own clock.
 */
import { createClient } from '/sdk/index.js'

const params = new URLSearchParams(globalThis.location.search)
const gateway = params.get('gateway')
let offsetMs = 0
const events = []
const sockets = []

const client = createClient({
  baseUrl: gateway,
  transport: 'cookie',
  now: () => Date.now() + offsetMs,
  // ?crossTab=0: the control experiment, each tab on its own
  crossTab: params.get('crossTab') !== '0',
})
client.on('tokenChanged', (e) => { events.push({ type: 'tokenChanged', ...e }) })
client.on('sessionEnded', (e) => { events.push({ type: 'sessionEnded', ...e }) })

function failure (err) {
  return { ok: false, name: err?.name, code: err?.code, status: err?.status, reason: err?.reason, message: String(err?.message ?? err) }
}

async function settle (promise) {
  try {
    return { ok: true, value: await promise }
  } catch (err) {
    return failure(err)
  }
}

async function describe (res) {
  const headers = {}
  res.headers.forEach((value, name) => { headers[name] = value })
  return { status: res.status, headers, body: await res.text() }
}

function until (check, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const deadline = Date.now() + timeoutMs
    const poll = () => {
      const value = check()
      if (value !== undefined) resolve(value)
      else if (Date.now() > deadline) reject(new Error('timed out'))
      else setTimeout(poll, 10)
    }
    poll()
  })
}

globalThis.harness = {
  gateway,
  advanceClock: (ms) => { offsetMs += ms },
  events: () => events,
  status: () => client.status,
  /** the access token's jti and sid (unverified claims), to tell tokens apart without handing the token to Node */
  tokenId: () => {
    const c = client.claims()
    return c === undefined ? undefined : { jti: c.jti, sid: c.sid }
  },
  login: (username, password) => settle(client.login(username, password)),
  restore: () => settle(client.restore()),
  refresh: () => settle(client.refresh()),
  logout: () => settle(client.logout()),
  logoutAll: () => settle(client.logoutAll()),
  fetch: (path, init) => settle(client.fetch(path, init).then(describe)),
  /** the same, started at wall-clock time `atMs`: two tabs given one time start together */
  fetchAt: async (atMs, path, init) => {
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, atMs - Date.now())))
    return await settle(client.fetch(path, init).then(describe))
  },
  /** fetch() with no SDK, e.g. from a page the gateway's CORS does not list */
  rawFetch: (url, init) => settle(fetch(url, init).then(describe)),
  /** everything script can read where a token might end up */
  visibleState: () => ({
    cookie: document.cookie,
    localStorage: JSON.stringify({ ...localStorage }),
    sessionStorage: JSON.stringify({ ...sessionStorage }),
    client: JSON.stringify(client),
    clientKeys: Object.getOwnPropertyNames(client).concat(Object.getOwnPropertyNames(Object.getPrototypeOf(client))),
    events: JSON.stringify(events),
  }),
  /** opens a socket through the SDK; resolves with its index once open (or with the failure) */
  openSocket: async (path, protocols) => {
    const opened = await settle(client.webSocket(path, protocols))
    if (!opened.ok) return opened
    const ws = opened.value
    const entry = { ws, messages: [], close: undefined, opened: false }
    sockets.push(entry)
    ws.addEventListener('message', (e) => { entry.messages.push(String(e.data)) })
    ws.addEventListener('close', (e) => { entry.close = { code: e.code, reason: e.reason, wasClean: e.wasClean } })
    ws.addEventListener('open', () => { entry.opened = true })
    try {
      await until(() => entry.opened || entry.close !== undefined ? true : undefined)
    } catch (err) {
      return failure(err)
    }
    if (!entry.opened) return { ok: false, name: 'CloseEvent', ...entry.close }
    return { ok: true, value: { index: sockets.length - 1, protocol: ws.protocol, url: ws.url } }
  },
  /** sends `text` and resolves with the next message */
  exchange: async (index, text) => {
    const entry = sockets[index]
    const before = entry.messages.length
    entry.ws.send(text)
    return await settle(until(() => entry.messages[before]))
  },
  closed: (index) => settle(until(() => sockets[index].close)),
}
