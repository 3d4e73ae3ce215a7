/**
 * nginx as a plain keep-alive reverse proxy: one process (master_process off), no access log,
 * a keep-alive upstream pool. Its own prefix, pid and error log in a temp dir; run in the
 * foreground and ended by PID.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

export function writeNginxConf (dir: string, listenPort: number, upstreamPort: number): string {
  mkdirSync(join(dir, 'tmp'), { recursive: true })
  const conf = `
daemon off;
master_process off;
worker_processes 1;
pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'error.log')} warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${join(dir, 'tmp')};
  proxy_temp_path ${join(dir, 'tmp')};
  fastcgi_temp_path ${join(dir, 'tmp')};
  uwsgi_temp_path ${join(dir, 'tmp')};
  scgi_temp_path ${join(dir, 'tmp')};
  keepalive_requests 1000000;
  upstream up {
    server 127.0.0.1:${upstreamPort};
    keepalive 64;
  }
  server {
    listen 127.0.0.1:${listenPort};
    location /api/ {
      proxy_pass http://up/;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
`
  const file = join(dir, 'nginx.conf')
  writeFileSync(file, conf)
  return file
}
