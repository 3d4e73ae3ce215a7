/**
 * The demo's upstream (127.0.0.1:4001 in gateway.yaml), one small server for three jobs:
 *
 * - `/app/…`: the demo page (demo/index.html, app.js, style.css, favicon.svg) and the client SDK under
 *   `/app/sdk/` (demo/sdk.ts). The gateway's `demo-app` route serves it publicly, so the
 *   page and the gateway share one origin.
 * - a WebSocket echo (the `demo-live` route, upgrades only): greets with the identity the
 *   gateway injected, then echoes each message.
 * - everything else: an HTTP echo of the request as it arrived (method, URL, headers), to
 *   show what an upstream receives: the identity headers, never the token.
 */
import { readFileSync } from 'node:fs'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { WebSocketServer } from 'ws'
import { clientModules } from './sdk.js'

const PAGE_DIR = new URL('./', import.meta.url)
const PAGE_FILES: Record<string, string> = {
  '/app/': 'index.html',
  '/app/app.js': 'app.js',
  '/app/style.css': 'style.css',
  '/app/favicon.svg': 'favicon.svg',
}
const TYPES: Record<string, string> = { html: 'text/html', js: 'text/javascript', css: 'text/css', svg: 'image/svg+xml' }

// the access token lives in the page's memory: no third-party script, no inline script, no framing
const PAGE_HEADERS = {
  'content-security-policy': "default-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
}

export interface DemoUpstream {
  url: string
  port: number
  close: () => Promise<void>
}

function serveApp (path: string, res: ServerResponse, sdk: ReadonlyMap<string, string>): boolean {
  if (path === '/app') {
    // relative URLs in the page resolve under /app/ only with the slash
    res.writeHead(308, { location: '/app/' }).end()
    return true
  }
  const file = PAGE_FILES[path]
  // read on every request: edit the page while the demo runs, reload, see the change
  const body = file !== undefined ? readFileSync(new URL(file, PAGE_DIR), 'utf8') : path.startsWith('/app/sdk/') ? sdk.get(path.slice('/app/sdk/'.length)) : undefined
  if (body === undefined) return false
  const ext = (file ?? path).split('.').pop() ?? ''
  res.writeHead(200, { 'content-type': `${TYPES[ext] ?? 'text/plain'}; charset=utf-8`, ...PAGE_HEADERS }).end(body)
  return true
}

function echo (req: IncomingMessage, res: ServerResponse): void {
  res.setHeader('content-type', 'application/json')
  res.end(JSON.stringify({ upstream: 'demo', method: req.method, url: req.url, headers: req.headers }, null, 2) + '\n')
}

export async function startDemoUpstream (options: { host?: string, port: number }): Promise<DemoUpstream> {
  const sdk = clientModules()
  const server: Server = createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://upstream').pathname
    if ((req.method === 'GET' || req.method === 'HEAD') && serveApp(path, res, sdk)) return
    echo(req, res)
  })
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws, req) => {
    ws.send(JSON.stringify({ type: 'welcome', user: req.headers['x-user-id'], scopes: req.headers['x-user-scopes'] }))
    ws.on('message', (data) => { ws.send(JSON.stringify({ type: 'echo', text: String(data) })) })
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(options.port, options.host ?? '127.0.0.1', () => { server.off('error', reject); resolve() })
  })
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://${options.host ?? '127.0.0.1'}:${port}`,
    port,
    close: async () => {
      for (const client of wss.clients) client.terminate()
      await new Promise<void>((resolve) => wss.close(() => resolve()))
      server.closeAllConnections()
      await new Promise<void>((resolve) => server.close(() => resolve()))
    },
  }
}
