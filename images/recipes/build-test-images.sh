#!/usr/bin/env bash
# build-test-images.sh [CACHEDIR]: builds the x86 test images once and keeps them in a cache dir:
#   CACHEDIR/x86-initramfs/   (x86-initramfs.sh)   vmlinux initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/x86-disk/        (x86-disk.sh)        disk.qcow2 vmlinux initrd.cpio.gz cmdline kernel-release bundle.tar
#   CACHEDIR/debs/            downloaded .debs, shared by the recipes (unused ones are pruned)
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
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${1:-${PADDOCK_IMAGE_CACHE:-$HOME/.cache/paddock/images}}
IMAGES=(x86-initramfs x86-disk)

log() { printf 'build-test-images: %s\n' "$*" >&2; }

mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)
exec 9> "$CACHE/.lock"
if ! flock -n 9; then
  log "waiting for another build in $CACHE"
  flock 9
fi

# what the images are made of right now (one apt-cache call; apt is slow to start in Docker images)
package_state() {
  local kernel
  kernel=$(apt-cache depends --important linux-image-amd64 2>/dev/null |
           sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  echo "kernel=${PADDOCK_KERNEL_PACKAGE:-$kernel}"
  apt-cache policy "${PADDOCK_KERNEL_PACKAGE:-$kernel}" busybox-static dropbear-bin \
      libc6 libcrypt1 zlib1g libtomcrypt1 libtommath1 libgmp10 2>/dev/null |
    awk '/^[^ ]/ { p = $1 } /^  Candidate:/ { print p, $2 }'
}

recipes_hash=$(cd "$HERE" && find . -name '*.sh' -type f | LC_ALL=C sort | xargs sha256sum)
packages=$(package_state)
# a recipe's stamp: every recipe file (they share lib/ and guest/) + the package state + its name
stamp_of() { printf '%s\n%s\n%s\n' "$1" "$recipes_hash" "$packages" | sha256sum | cut -d' ' -f1; }

# bundle.tar: what Paddock stores as one image of format "bundle" (see images/bundle.ts): members
# kernel, initrd, cmdline and, for a disk image, rootfs.qcow2. Plain tar: the kernel is already
# uncompressed for speed, and the agent unpacks a bundle once per sha256.
pack_bundle() {
  local out=$1 members=(kernel initrd cmdline)
  local stage=$out/.bundle
  mkdir -p "$stage"
  ln "$out/vmlinux" "$stage/kernel"
  ln "$out/initrd.cpio.gz" "$stage/initrd"
  ln "$out/cmdline" "$stage/cmdline"
  if [ -f "$out/disk.qcow2" ]; then ln "$out/disk.qcow2" "$stage/rootfs.qcow2"; members+=(rootfs.qcow2); fi
  tar --create --file "$out/bundle.tar" --directory "$stage" --owner=0 --group=0 --numeric-owner "${members[@]}"
  rm -rf "$stage"
}

touch "$CACHE/.build-start"
built=0
for name in "${IMAGES[@]}"; do
  dir=$CACHE/$name
  stamp=$(stamp_of "$name")
  if [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ]; then
    log "$name is up to date"
    continue
  fi
  log "building $name (recipes or packages changed, or no image yet)"
  start=$(date +%s)
  rm -rf "$dir.new"
  PADDOCK_DEB_CACHE=$CACHE/debs "$HERE/$name.sh" "$dir.new" ||
    { rm -rf "$dir.new"; log "$name: build failed"; exit 1; }
  pack_bundle "$dir.new"
  echo "$stamp" > "$dir.new/.stamp"
  rm -rf "$dir.old"
  if [ -e "$dir" ]; then mv "$dir" "$dir.old"; fi
  mv "$dir.new" "$dir"
  rm -rf "$dir.old"
  log "$name built in $(($(date +%s) - start)) s"
  built=1
done

if [ "$built" = 1 ]; then
  # the same kernel in both bundles: keep one copy on disk
  first=$CACHE/${IMAGES[0]}/vmlinux
  for name in "${IMAGES[@]:1}"; do
    if [ -f "$CACHE/$name/vmlinux" ] && cmp -s "$first" "$CACHE/$name/vmlinux"; then
      ln -f "$first" "$CACHE/$name/vmlinux"
    fi
  done
  # drop .debs that no build used this time (old versions)
  find "$CACHE/debs" -name '*.deb' ! -newer "$CACHE/.build-start" -delete 2>/dev/null || true
fi
rm -f "$CACHE/.build-start"

for name in "${IMAGES[@]}"; do
  echo "$name $CACHE/$name"
done
