# syntax=docker/dockerfile:1
# portcullis: multi-stage build; the final image holds compiled JS and production deps only.
#
#   docker build -t portcullis .
#   docker run --rm -v portcullis-keys:/etc/portcullis/config/keys portcullis \
#     keys generate --alg EdDSA --kid k1 --out /etc/portcullis/config/keys
#   docker run -p 8080:8080 \
#     -v "$PWD/gateway.yaml:/etc/portcullis/gateway.yaml:ro" \
#     -v portcullis-keys:/etc/portcullis/config/keys:ro \
#     -v portcullis-data:/var/lib/portcullis \
#     portcullis
# (A host directory works for the keys too: `-v "$PWD/keys:/etc/portcullis/config/keys:ro"`, with
# the key readable by uid 1000, the image's `node` user: keys are written with mode 0600.)
#
# Layout inside the image (it mirrors the repository's, so the example gateway.yaml's relative paths hold):
#   /etc/portcullis/gateway.yaml        the config (mount it); the working directory, so
#                                       `docker run … portcullis users list` finds it without -c
#   /etc/portcullis/config/keys/        signing keys: the example's `./config/keys/k1.pem` resolves
#                                       against the config file's directory
#   /var/lib/portcullis                 the embedded store (VOLUME) when no DATABASE_URL is set;
#                                       the config reads it as ${PORTCULLIS_DATA_DIR}. Several
#                                       replicas need PostgreSQL (DATABASE_URL) instead.
# Listeners: HOST defaults to 0.0.0.0 here so `-p 8080:8080` reaches the gateway. The admin
# listener (health, readiness, metrics, admin API) stays on 127.0.0.1 unless ADMIN_HOST is set
# (-e ADMIN_HOST=0.0.0.0 -p 9090:9090 to scrape metrics from outside); the HEALTHCHECK runs inside
# the container and follows ADMIN_HOST/ADMIN_PORT.
ARG BASE=node:22-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
# --ignore-scripts: nothing in this stack needs install scripts (npm 11 skips them by default too)
RUN npm ci --no-audit --no-fund --ignore-scripts
# The context is everything .dockerignore lets through (src, plugins, config, public, … as the
# tree grows); only what the next RUN gathers in /out reaches the final image.
COPY . .
RUN npm run build \
 && mkdir -p /out \
 && cp -R dist /out/ \
 && for d in public; do if [ -d "$d" ]; then cp -R "$d" /out/; fi; done

FROM ${BASE} AS runtime
LABEL org.opencontainers.image.title="portcullis" \
      org.opencontainers.image.description="An API gateway that terminates authentication" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORTCULLIS_DATA_DIR=/var/lib/portcullis
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --ignore-scripts && npm cache clean --force
# root-owned: the process can read its code but not change it
COPY --from=build /out/ ./
# owned by node: a new named volume is seeded from the image's directory, owner included, so
# `keys generate` can write into a fresh keys volume and the embedded store into a fresh data volume
RUN install -d -o node -g node -m 0700 /etc/portcullis/config/keys /var/lib/portcullis
VOLUME ["/var/lib/portcullis"]
USER node
WORKDIR /etc/portcullis
EXPOSE 8080 9090
# 127.0.0.1 reaches an admin listener on 127.0.0.1 or on a wildcard address
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "const h = process.env.ADMIN_HOST; const host = !h || h === '0.0.0.0' || h === '::' ? '127.0.0.1' : h.includes(':') ? `[${h}]` : h; fetch(`http://${host}:${process.env.ADMIN_PORT || 9090}/healthz`, { signal: AbortSignal.timeout(2500) }).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# the gateway drains on SIGTERM: stop accepting, finish in-flight requests (server.shutdownTimeout), exit 0
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "/app/dist/src/cli.js"]
CMD ["start", "-c", "/etc/portcullis/gateway.yaml"]
