// A tiny upstream for scripts/image-smoke.sh: answers every request with what it received
// (method, path, identity headers), listens on 127.0.0.1 on a free port and prints the port.
import { createServer } from 'node:http'

const server = createServer((req, res) => {
  const body = JSON.stringify({ upstream: 'image-smoke', method: req.method, url: req.url, userId: req.headers['x-user-id'] ?? null })
  res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
})
server.listen(0, '127.0.0.1', () => { process.stdout.write(`${server.address().port}\n`) })
for (const signal of ['SIGTERM', 'SIGINT']) process.once(signal, () => server.close(() => process.exit(0)))
