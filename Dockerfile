# syntax=docker/dockerfile:1
# portcullis: multi-stage build; the final image holds compiled JS and production deps only.
#   docker build -t portcullis .
#   docker run -p 8080:8080 -v $PWD/gateway.yaml:/etc/portcullis/gateway.yaml:ro \
#     -v $PWD/config/keys:/etc/portcullis/keys:ro -e DATABASE_URL=postgres://… portcullis
# The config is read from /etc/portcullis/gateway.yaml (relative key paths resolve against
# /etc/portcullis); the embedded store, when no DATABASE_URL is set, lives in /var/lib/portcullis.
ARG BASE=node:22-bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
COPY plugins ./plugins
COPY config ./config
RUN npm run build

FROM ${BASE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /src/dist ./dist
RUN mkdir -p /etc/portcullis /var/lib/portcullis && chown node:node /var/lib/portcullis
USER node
EXPOSE 8080 9090
# the admin listener must be reachable from inside the container for this check
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.ADMIN_PORT||9090)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/cli.js"]
CMD ["start", "-c", "/etc/portcullis/gateway.yaml"]
