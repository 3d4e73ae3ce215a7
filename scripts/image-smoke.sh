#!/usr/bin/env bash
# Builds the portcullis image on this machine and runs it the way a user would: a key made by
# the image itself, the example gateway.yaml, the embedded store in a volume, a read-only root
# filesystem, host networking on 127.0.0.1 only. Probes /healthz and /readyz, sends one request
# through a route that needs no token to a tiny upstream and one to a protected route (401),
# checks the "portcullis listening" line reaches `podman logs` promptly, runs the image's
# HEALTHCHECK, stops the container (SIGTERM → drain → exit 0) and cleans up everything it made
# except the images (the node22 base stays cached; the built image stays tagged).
#
#   scripts/image-smoke.sh          as root; installs buildah podman debootstrap runc if missing and
#                                   makes localhost/node22-base if missing (~2 min, once); then ~1–2 min
# Environment:
#   SMOKE_CONTEXT=DIR   build from DIR instead of this checkout (its gateway.yaml is used too)
#   SMOKE_IMAGE=NAME    tag of the built image (default localhost/portcullis:smoke)
#   SMOKE_BASE=NAME     base image (default localhost/node22-base; made by scripts/image/make-node22-base.sh)
# Ends with "PASS: …" and exit 0, or "FAIL: …" and exit 1. No Docker engine runs here and no base
# image can be pulled: see /work/shared/TOOLCHAIN.md "Building and running the image here" for why
# each podman flag below is needed (runc, ulimits, --format docker).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONTEXT=$(cd "${SMOKE_CONTEXT:-$ROOT}" && pwd)
IMAGE=${SMOKE_IMAGE:-localhost/portcullis:smoke}
BASE_IMAGE=${SMOKE_BASE:-localhost/node22-base}
LOG_LINE_WITHIN_MS=3000     # the logger flushes at least every second; 3 s leaves room on a busy machine
HEALTHY_WITHIN_S=90         # the first start creates the embedded store: 6–13 s on this shared 2-core machine
ID=portcullis-smoke-$$      # every container and volume this run makes carries this name
STARTED_S=$(date +%s)

WORK=""
UPSTREAM_PID=""
CONTAINERS=()
VOLUMES=()
FAILED=()
CHECKS=0

log() { printf '== %s\n' "$*"; }
pass() { CHECKS=$((CHECKS + 1)); printf 'ok      %s\n' "$*"; }
fail() { CHECKS=$((CHECKS + 1)); FAILED+=("$1"); printf 'FAILED  %s\n' "$*"; }
# a failure that makes the rest meaningless
abort() { fail "$@"; exit 1; }
now_ms() { date +%s%3N; }

# crun refuses this machine's hybrid cgroups; runc works. One-off commands below run with
# --no-healthcheck: podman would try to schedule the HEALTHCHECK through systemd, absent here.
P=(podman --runtime runc)
hard_nofile=$(ulimit -Hn); [ "$hard_nofile" = unlimited ] && hard_nofile=1048576
# no CAP_SYS_RESOURCE here: podman's default limits fail at setrlimit
ULIMITS=(--ulimit "nofile=$hard_nofile:$hard_nofile" --ulimit nproc=4096:4096)

# shellcheck disable=SC2317  # invoked through trap
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for c in "${CONTAINERS[@]}"; do timeout 30 "${P[@]}" rm -f -t 0 "$c" >/dev/null 2>&1; done
  for v in "${VOLUMES[@]}"; do timeout 30 podman volume rm -f "$v" >/dev/null 2>&1; done
  if [ -n "$UPSTREAM_PID" ]; then kill "$UPSTREAM_PID" 2>/dev/null; wait "$UPSTREAM_PID" 2>/dev/null; fi
  [ -n "$WORK" ] && rm -rf "$WORK"
  local took=$(($(date +%s) - STARTED_S))
  if [ ${#FAILED[@]} -eq 0 ] && [ "$rc" -eq 0 ]; then
    echo "PASS: image smoke — $CHECKS checks passed (${took}s, image $IMAGE)"
    exit 0
  fi
  [ ${#FAILED[@]} -eq 0 ] && FAILED+=("interrupted (exit $rc)")
  printf 'FAIL: image smoke — %d of %d checks failed (%ss):' "${#FAILED[@]}" "$CHECKS" "$took"
  printf ' [%s]' "${FAILED[@]}"
  echo
  exit 1
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools -------------------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || abort "runs as root (rootful podman, debootstrap)"
missing=()
for tool in buildah podman debootstrap runc curl; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  { timeout 300 apt-get update -qq && timeout 600 apt-get install -y -qq "${missing[@]}"; } >/dev/null 2>&1 \
    || abort "apt-get install ${missing[*]}"
fi
WORK=$(mktemp -d /tmp/portcullis-smoke.XXXXXX)

# --- base image --------------------------------------------------------------------------------
if podman image exists "$BASE_IMAGE"; then
  log "base image $BASE_IMAGE: cached"
else
  log "base image $BASE_IMAGE: making it (debootstrap + node 22 from the npm registry)"
  timeout 900 "$ROOT/scripts/image/make-node22-base.sh" "$BASE_IMAGE" || abort "make $BASE_IMAGE"
fi

# --- build -------------------------------------------------------------------------------------
log "buildah bud $CONTEXT → $IMAGE"
previous=$(podman image inspect -f '{{.Id}}' "$IMAGE" 2>/dev/null || true)
t=$(date +%s)
# --format docker keeps HEALTHCHECK (the OCI format drops it)
if timeout 600 buildah bud --format docker --isolation chroot --build-arg "BASE=$BASE_IMAGE" \
     -t "$IMAGE" -f "$CONTEXT/Dockerfile" "$CONTEXT" >"$WORK/build.log" 2>&1; then
  size=$(podman image inspect -f '{{.Size}}' "$IMAGE")
  pass "image built in $(($(date +%s) - t))s, $((size / 1000000)) MB"
else
  tail -n 30 "$WORK/build.log"
  abort "image build (buildah bud)"
fi
current=$(podman image inspect -f '{{.Id}}' "$IMAGE")
if [ -n "$previous" ] && [ "$previous" != "$current" ] \
   && [ "$(podman image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
  podman rmi "$previous" >/dev/null 2>&1 || true  # the previous smoke build, now untagged
fi

# --- what the image declares -------------------------------------------------------------------
podman image inspect "$IMAGE" >"$WORK/inspect.json"
if problems=$(node -e '
  const [img] = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))
  const c = img.Config ?? {}, env = c.Env ?? [], hc = img.Healthcheck ?? img.HealthCheck ?? c.Healthcheck
  const want = {
    "user node": c.User === "node",
    "ENV HOST=0.0.0.0": env.includes("HOST=0.0.0.0"),
    "ENV PORTCULLIS_DATA_DIR=/var/lib/portcullis": env.includes("PORTCULLIS_DATA_DIR=/var/lib/portcullis"),
    "VOLUME /var/lib/portcullis": Object.keys(c.Volumes ?? {}).includes("/var/lib/portcullis"),
    "STOPSIGNAL SIGTERM": c.StopSignal === "SIGTERM",
    "HEALTHCHECK": Array.isArray(hc?.Test) && hc.Test.length > 1,
  }
  const missing = Object.entries(want).filter(([, ok]) => !ok).map(([k]) => k)
  if (missing.length > 0) { console.log(missing.join(", ")); process.exit(1) }
  ' "$WORK/inspect.json"); then
  pass "image config: user node, HOST=0.0.0.0, PORTCULLIS_DATA_DIR, VOLUME, STOPSIGNAL, HEALTHCHECK"
else
  fail "image config lacks: $problems"
fi
# shellcheck disable=SC2016  # JavaScript, not shell
if contents=$(timeout 60 "${P[@]}" run --rm --no-healthcheck --network none "${ULIMITS[@]}" --entrypoint node "$IMAGE" -e '
  const fs = require("fs"), bad = []
  if (!fs.existsSync("/app/dist/src/cli.js")) bad.push("no /app/dist/src/cli.js")
  for (const p of ["/app/src", "/app/test", "/app/node_modules/typescript", "/app/node_modules/tap"]) if (fs.existsSync(p)) bad.push(p)
  console.log(`node ${process.version}` + (bad.length ? `; unexpected: ${bad.join(", ")}` : ""))
  process.exit(bad.length ? 1 : 0)' 2>&1); then
  pass "image contents: compiled JS and production deps only ($contents)"
else
  fail "image contents: $contents"
fi

# --- a key, made by the image --------------------------------------------------------------------
VOLUMES+=("$ID-keys" "$ID-data")
if out=$(timeout 60 "${P[@]}" run --rm --no-healthcheck --network none "${ULIMITS[@]}" -v "$ID-keys:/etc/portcullis/config/keys" \
      "$IMAGE" keys generate --alg EdDSA --kid k1 --out /etc/portcullis/config/keys 2>&1); then
  pass "keys generate into a fresh volume at /etc/portcullis/config/keys: $(tr '\n' ' ' <<<"$out" | cut -c1-120)"
else
  abort "keys generate: $out"
fi

# --- the upstream and the config -----------------------------------------------------------------
node "$ROOT/scripts/image/echo-upstream.mjs" >"$WORK/upstream.port" &
UPSTREAM_PID=$!
for _ in $(seq 50); do [ -s "$WORK/upstream.port" ] && break; sleep 0.1; done
UPSTREAM_PORT=$(cat "$WORK/upstream.port")
[ -n "$UPSTREAM_PORT" ] || abort "the upstream did not start"
read -r PORT ADMIN_PORT < <(node -e '
  const net = require("net"), a = net.createServer(), b = net.createServer()
  a.listen(0, "127.0.0.1", () => b.listen(0, "127.0.0.1", () => {
    console.log(a.address().port, b.address().port); a.close(); b.close() }))')

# The example gateway.yaml as a user runs it, with the two edits proposed for it (applied only
# where the file does not have them yet) and its upstream moved to this run's free port.
edits=()
sed -e "s#http://127\.0\.0\.1:4001#http://127.0.0.1:$UPSTREAM_PORT#g" "$CONTEXT/gateway.yaml" >"$WORK/gateway.yaml"
# shellcheck disable=SC2016  # ${VAR} is meant literally: the gateway resolves it
if ! grep -q 'ADMIN_HOST' "$WORK/gateway.yaml"; then
  sed -i '/^admin:/,/^[a-z]/ s#^  host: 127\.0\.0\.1#  host: ${ADMIN_HOST:-127.0.0.1}#' "$WORK/gateway.yaml"
  edits+=("admin.host: \${ADMIN_HOST:-127.0.0.1}")
fi
# shellcheck disable=SC2016
if ! grep -q '^  dataDir:' "$WORK/gateway.yaml"; then
  sed -i '/^database:/,/^[a-z]/ s#^\(  url: .*\)$#\1\n  dataDir: ${PORTCULLIS_DATA_DIR:-./data}#' "$WORK/gateway.yaml"
  edits+=("database.dataDir: \${PORTCULLIS_DATA_DIR:-./data}")
fi
chmod 644 "$WORK/gateway.yaml"
[ ${#edits[@]} -gt 0 ] && log "gateway.yaml: applied edits not yet in $CONTEXT/gateway.yaml: ${edits[*]}"
RUN_ARGS=("${ULIMITS[@]}" -e HOST=127.0.0.1 -e "PORT=$PORT" -e "ADMIN_PORT=$ADMIN_PORT"
  -v "$WORK/gateway.yaml:/etc/portcullis/gateway.yaml:ro" -v "$ID-keys:/etc/portcullis/config/keys:ro")

# `check` with no -c: the working directory is /etc/portcullis
if out=$(timeout 60 "${P[@]}" run --rm --no-healthcheck --network none "${RUN_ARGS[@]}" "$IMAGE" check 2>&1); then
  pass "portcullis check (config + key as mounted): $(grep -c '/api/' <<<"$out") routes"
else
  abort "portcullis check: $out"
fi

# --- run -----------------------------------------------------------------------------------------
log "run: gateway 127.0.0.1:$PORT, admin 127.0.0.1:$ADMIN_PORT, upstream 127.0.0.1:$UPSTREAM_PORT"
CONTAINERS+=("$ID")
started_ms=$(now_ms)
# HOST=127.0.0.1 overrides the image's 0.0.0.0: with host networking nothing else may be reached
if ! timeout 60 "${P[@]}" run -d --name "$ID" --network host --read-only --log-driver k8s-file \
     "${RUN_ARGS[@]}" -v "$ID-data:/var/lib/portcullis" "$IMAGE" >"$WORK/run.out" 2>&1; then
  cat "$WORK/run.out"
  abort "podman run"
fi

up_ms=""
deadline=$(($(date +%s) + HEALTHY_WITHIN_S))
while [ "$(date +%s)" -lt "$deadline" ]; do
  if curl -sf -m 2 -o /dev/null "http://127.0.0.1:$ADMIN_PORT/healthz"; then up_ms=$(now_ms); break; fi
  [ "$(podman inspect -f '{{.State.Running}}' "$ID" 2>/dev/null)" = true ] || break
  sleep 0.1
done
if [ -z "$up_ms" ]; then
  podman logs "$ID" 2>&1 | tail -n 20
  abort "gateway up: /healthz did not answer within ${HEALTHY_WITHIN_S}s (or the container exited)"
fi
pass "/healthz 200, $((up_ms - started_ms)) ms after podman run (first start creates the embedded store)"

# the listening line must reach the log without waiting for traffic or shutdown
seen_ms=""
while [ $(($(now_ms) - up_ms)) -le "$LOG_LINE_WITHIN_MS" ]; do
  if podman logs "$ID" 2>/dev/null | grep -q '"msg":"portcullis listening"'; then seen_ms=$(now_ms); break; fi
  sleep 0.1
done
if [ -n "$seen_ms" ]; then
  pass "\"portcullis listening\" in podman logs $((seen_ms - up_ms)) ms after the listeners answered"
else
  fail "\"portcullis listening\" not in podman logs within ${LOG_LINE_WITHIN_MS} ms of the listeners answering (log lines held in the logger's buffer)"
fi

code=$(curl -s -m 5 -o "$WORK/readyz.json" -w '%{http_code}' "http://127.0.0.1:$ADMIN_PORT/readyz")
if [ "$code" = 200 ]; then pass "/readyz 200 $(cat "$WORK/readyz.json")"; else fail "/readyz: HTTP $code $(cat "$WORK/readyz.json")"; fi

code=$(curl -s -m 5 -o "$WORK/catalog.json" -w '%{http_code}' "http://127.0.0.1:$PORT/api/catalog/shoes")
if [ "$code" = 200 ] && grep -q '"upstream":"image-smoke"' "$WORK/catalog.json" && grep -q '"url":"/catalog/shoes"' "$WORK/catalog.json"; then
  pass "GET /api/catalog/shoes without a token (auth: optional) → 200 from the upstream: $(cat "$WORK/catalog.json")"
else
  fail "GET /api/catalog/shoes: HTTP $code $(head -c 300 "$WORK/catalog.json")"
fi

code=$(curl -s -m 5 -D "$WORK/orders.headers" -o "$WORK/orders.json" -w '%{http_code}' "http://127.0.0.1:$PORT/api/orders/1")
challenge=$(grep -i '^www-authenticate:' "$WORK/orders.headers" | tr -d '\r')
if [ "$code" = 401 ] && grep -qi 'bearer realm="portcullis"' <<<"$challenge"; then
  pass "GET /api/orders/1 without a token (auth: required) → 401, $challenge"
else
  fail "GET /api/orders/1: HTTP $code, ${challenge:-no WWW-Authenticate}"
fi

# no systemd here, so podman never runs the HEALTHCHECK on its own: run it once
if out=$(timeout 30 "${P[@]}" healthcheck run "$ID" 2>&1); then
  pass "HEALTHCHECK (podman healthcheck run): ${out:-healthy}"
else
  fail "HEALTHCHECK: ${out:-unhealthy}"
fi

data_dir=$(podman volume inspect -f '{{.Mountpoint}}' "$ID-data" 2>/dev/null)
if [ -n "$data_dir" ] && [ -n "$(ls -A "$data_dir" 2>/dev/null)" ]; then
  pass "embedded store written to the volume at /var/lib/portcullis ($(du -sh "$data_dir" | cut -f1))"
else
  fail "embedded store: the volume at /var/lib/portcullis is empty"
fi

# --- stop: SIGTERM, drain, exit 0 ----------------------------------------------------------------
t=$(now_ms)
timeout 60 "${P[@]}" stop -t 20 "$ID" >/dev/null 2>&1
stop_ms=$(($(now_ms) - t))
exit_code=$(podman inspect -f '{{.State.ExitCode}}' "$ID" 2>/dev/null)
podman logs "$ID" >"$WORK/gateway.log" 2>&1
if [ "$exit_code" = 0 ] && grep -q '"msg":"stopped"' "$WORK/gateway.log"; then
  pass "podman stop: drained and exited 0 in $stop_ms ms, \"stopped\" logged"
else
  fail "podman stop: exit code ${exit_code:-?} after $stop_ms ms"
fi
log "gateway log ($(wc -l <"$WORK/gateway.log") lines):"
cut -c1-200 "$WORK/gateway.log" | sed 's/^/   /'
exit 0
