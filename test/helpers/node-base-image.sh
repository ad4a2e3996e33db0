#!/usr/bin/env bash
# node-base-image.sh STORAGE: puts a stand-in for docker.io/library/node:20-bookworm-slim (the base of
# deploy/container/Containerfile.*) in buildah's storage at STORAGE (STORAGE/root, STORAGE/run; the
# driver PADDOCK_BUILDAH_DRIVER, overlay by default, or vfs), for building the images
# where no container registry can be reached: Debian bookworm (minbase) from the Debian mirror with
# mmdebstrap, and this machine's Node 20 with its npm and headers in /usr/local, where the official
# image has them. This machine's own certificate authorities (/usr/local/share/ca-certificates: a
# TLS-intercepting proxy's, say) go in too, with NODE_EXTRA_CA_CERTS pointing at the system bundle
# that ca-certificates builds from them, as a site's own base image would have them. Needs root (mmdebstrap --mode=root) and buildah. The root filesystem is cached in
# CACHEDIR (${PADDOCK_CONTAINER_CACHE:-$HOME/.cache/paddock/container}; about 3 minutes to make the
# first time, 170 MB); an image already in STORAGE made with this Node is kept.
#
# Environment: PADDOCK_DEBIAN_MIRROR (default http://deb.debian.org/debian), PADDOCK_DEBIAN_SECURITY
# (default http://deb.debian.org/debian-security).
set -euo pipefail
PROG=node-base-image
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $PROG STORAGE" >&2; exit 2; fi
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap --mode=root)"
for tool in mmdebstrap buildah node; do command -v "$tool" >/dev/null || die "$tool is missing: bash scripts/setup.sh"; done
STORAGE=$1
CACHE=${PADDOCK_CONTAINER_CACHE:-$HOME/.cache/paddock/container}
MIRROR=${PADDOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${PADDOCK_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
NAME=docker.io/library/node:20-bookworm-slim
NODE_VERSION=$(node --version)
case $NODE_VERSION in v20.*) ;; *) die "this machine's Node is $NODE_VERSION, not 20" ;; esac
NODE_PREFIX=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
[ -d "$NODE_PREFIX/lib/node_modules/npm" ] && [ -d "$NODE_PREFIX/include/node" ] || die "no npm or headers under $NODE_PREFIX"
bah() { buildah --root "$STORAGE/root" --runroot "$STORAGE/run" --storage-driver "${PADDOCK_BUILDAH_DRIVER:-overlay}" "$@"; }

if [ "$(bah inspect --type image --format '{{index .OCIv1.Config.Labels "paddock.node"}}' "$NAME" 2>/dev/null || true)" = "$NODE_VERSION" ]; then
  exit 0
fi
mkdir -p "$CACHE"
ROOTFS=$CACHE/bookworm-minbase.tar
if [ ! -s "$ROOTFS" ]; then
  start=$(date +%s)
  mmdebstrap --mode=root --variant=minbase --format=tar --quiet bookworm "$ROOTFS.partial" \
    "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main" \
    >"$CACHE/mmdebstrap.log" 2>&1 || { tail -30 "$CACHE/mmdebstrap.log" >&2; rm -f "$ROOTFS.partial"; die "mmdebstrap failed"; }
  mv "$ROOTFS.partial" "$ROOTFS"
  log "Debian bookworm root filesystem in $(($(date +%s) - start)) s"
fi
container=$(bah from scratch)
trap 'bah rm "$container" >/dev/null 2>&1 || true' EXIT
bah add "$container" "$ROOTFS" / >/dev/null
bah copy "$container" "$NODE_PREFIX/bin/node" /usr/local/bin/node >/dev/null
bah copy "$container" "$NODE_PREFIX/lib/node_modules/npm" /usr/local/lib/node_modules/npm >/dev/null
bah copy "$container" "$NODE_PREFIX/include/node" /usr/local/include/node >/dev/null
if [ -d /usr/local/share/ca-certificates ] && [ -n "$(ls -A /usr/local/share/ca-certificates)" ]; then
  bah copy "$container" /usr/local/share/ca-certificates /usr/local/share/ca-certificates >/dev/null
fi
bah run --isolation chroot "$container" -- sh -c \
  'ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm && ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node --version && npm --version' >/dev/null
bah config --env NODE_VERSION="${NODE_VERSION#v}" --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --env NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt \
  --cmd node --label paddock.node="$NODE_VERSION" "$container"
bah commit --quiet --format docker "$container" "$NAME" >/dev/null
log "$NAME stand-in (Node $NODE_VERSION) in $STORAGE"
