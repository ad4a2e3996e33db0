#!/usr/bin/env bash
# build-test-images.sh [CACHEDIR]: builds the test images once and keeps them in a cache dir:
#   CACHEDIR/x86-initramfs/   (x86-initramfs.sh)   vmlinux initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/x86-disk/        (x86-disk.sh)        disk.qcow2 vmlinux initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/arm64-initramfs/ (arm64-initramfs.sh) Image.gz initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/armv7-initramfs/ (armv7-initramfs.sh) zImage initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/arm64-plain-initramfs/ (arm64-plain-initramfs.sh) the same files as arm64-initramfs, no Paddock hook
#   CACHEDIR/debian-cloud/    (debian-cloud.sh)    disk.qcow2: a stock Debian cloud image (cloud-init), no bundle;
#                             built only as root (mmdebstrap), about 3 minutes
#   CACHEDIR/debs/            downloaded .debs, shared by the recipes (unused ones are pruned), and
#   CACHEDIR/debs/apt-arm64/, apt-armhf/   the private apt states (package lists) for the ARM packages
# CACHEDIR defaults to ${PADDOCK_IMAGE_CACHE:-$HOME/.cache/paddock/images}.
#
# An image is rebuilt only when it is missing or its stamp changed. The stamp hashes the recipe files
# (every *.sh under images/recipes) and the Debian packages they would use now (the resolved kernel
# package and the candidate versions), so a kernel security update also rebuilds. Builds take a lock,
# so parallel test runs and CI jobs wait for one build instead of racing. A finished image replaces the
# old one in a single rename.
#
# Output: one line per image on stdout, "NAME DIR" (progress goes to stderr), e.g.
#   x86-initramfs /root/.cache/paddock/images/x86-initramfs
#   x86-disk /root/.cache/paddock/images/x86-disk
#   arm64-initramfs /root/.cache/paddock/images/arm64-initramfs
#   armv7-initramfs /root/.cache/paddock/images/armv7-initramfs
#   debian-cloud /root/.cache/paddock/images/debian-cloud   (absent when not root and not built before)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-${PADDOCK_IMAGE_CACHE:-$HOME/.cache/paddock/images}}
IMAGES=(x86-initramfs x86-disk arm64-initramfs armv7-initramfs arm64-plain-initramfs debian-cloud)
arch_of() { case $1 in arm64-*) echo arm64 ;; armv7-*) echo armhf ;; *) echo amd64 ;; esac; }

PROG=build-test-images
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$HERE/lib/common.sh"   # set_arch, apt_setup, package_state, pack_bundle
log() { printf 'build-test-images: %s\n' "$*" >&2; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
# One build at a time per cache: test runs that start together share one build (the later ones wait
# for it, then find their images up to date).
exec 9>"$CACHE/.lock"
flock 9
exec 9> "$CACHE/.lock"
if ! flock -n 9; then
  log "waiting for another build in $CACHE"
  flock 9
fi

# the recipes and apt_setup keep .debs and the arm64/armhf package lists in the cache
export PADDOCK_DEB_CACHE=$CACHE/debs
mkdir -p "$PADDOCK_DEB_CACHE"

# what the images of each architecture are made of right now (one apt-cache call per architecture;
# apt is slow to start in Docker images). For arm64 and armhf this first downloads or refreshes the
# private package lists (see apt_setup in lib/common.sh).
declare -A PACKAGES=()
for name in "${IMAGES[@]}"; do
  arch=$(arch_of "$name")
  [ -z "${PACKAGES[$arch]:-}" ] || continue
  set_arch "$arch"
  apt_setup
  PACKAGES[$arch]=$(package_state)
done

# (debian-cloud.sh is left out: the small images do not use it)
recipes_hash=$(cd "$HERE" && find . -name '*.sh' -type f ! -name debian-cloud.sh | LC_ALL=C sort | xargs sha256sum)
# a recipe's stamp: every recipe file (they share lib/ and guest/) + its packages + its name
# The cloud image shares nothing with the others: its stamp is its own recipe, the amd64 kernel and
# the versions of its main packages (mmdebstrap resolves the rest itself), so a change to the small
# images' recipes does not cost a rebuild of it.
stamp_of() {
  if [ "$1" = debian-cloud ]; then
    printf '%s\n%s\n%s\n%s\n' "$1" "$(sha256sum < "$HERE/debian-cloud.sh")" "${PACKAGES[amd64]}" \
      "$(apt-cache policy cloud-init openssh-server systemd 2>/dev/null | awk '/^[^ ]/ { p = $1 } /^  Candidate:/ { print p, $2 }')"
  else
    printf '%s\n%s\n%s\n' "$1" "$recipes_hash" "${PACKAGES[$(arch_of "$1")]}"
  fi | sha256sum | cut -d' ' -f1
}

touch "$CACHE/.build-start"
built=0
built_arches=" "
for name in "${IMAGES[@]}"; do
  dir=$CACHE/$name
  stamp=$(stamp_of "$name")
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    log "$name is up to date"
    continue
  fi
  if [ "$name" = debian-cloud ] && [ "$(id -u)" -ne 0 ]; then
    log "$name: not building it (needs root); the tests that boot it will say so"
    continue
  fi
  log "building $name (recipes or packages changed, or no image yet)"
  start=$(date +%s)
  rm -rf "$dir.new"
  "$HERE/$name.sh" "$dir.new" ||
    { rm -rf "$dir.new"; log "$name: build failed"; exit 1; }
  # bundle.tar: the ARM recipes write their own; the x86 ones leave it to this script
  [ -f "$dir.new/bundle.tar" ] || [ "$name" = debian-cloud ] || pack_bundle "$dir.new"
  echo "$stamp" > "$dir.new/.stamp"
  rm -rf "$dir.old"
  if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
  mv "$dir.new" "$dir"
  rm -rf "$dir.old"
  log "$name built in $(($(date +%s) - start)) s"
  built=1
  built_arches="$built_arches$(arch_of "$name") "
done

if [ "$built" = 1 ]; then
  # the same kernel in both bundles: keep one copy on disk
  first=$CACHE/${IMAGES[0]}/vmlinux
  for name in "${IMAGES[@]:1}"; do
    if [ -f "$CACHE/$name/vmlinux" ] && cmp -s "$first" "$CACHE/$name/vmlinux"; then
      ln -f "$first" "$CACHE/$name/vmlinux"
    fi
  done
  # drop .debs of the architectures built this time that no build used (old versions)
  for arch in $built_arches; do
    find "$CACHE/debs" -maxdepth 1 -name "*_$arch.deb" ! -newer "$CACHE/.build-start" -delete 2>/dev/null || true
  done
fi
rm -f "$CACHE/.build-start"

for name in "${IMAGES[@]}"; do
  [ ! -d "$CACHE/$name" ] || echo "$name $CACHE/$name"
done
