#!/usr/bin/env bash
# arm64-plain-initramfs.sh OUTDIR: an arm64 boot bundle with NOTHING of Paddock in it, standing in
# for a board's own image (a vendor's or a Buildroot initramfs) that a user brings: the same Debian
# kernel and busybox-static + dropbear-bin as arm64-initramfs.sh, but its /init (plain/init.sh) has
# no key hook: no authorized_keys, no paddock.authorized_key= on the command line, no fw_cfg, no
# markers. dropbear runs with -R (host keys made on demand). A reservation reaches it only when the
# image is stored with access `overlay`: the board provisioner then appends an initramfs overlay with
# the reservation's authorized_keys and host key to the initrd.
#   OUTDIR/Image.gz  OUTDIR/initrd.cpio.gz  OUTDIR/cmdline  OUTDIR/kernel-release
#   OUTDIR/bundle.tar   members kernel (= Image.gz), initrd, cmdline
set -euo pipefail
PROG=arm64-plain-initramfs
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
set_arch arm64

# `quiet`, as images tend to have it: the console shows neither a Paddock marker nor the kernel's
# "Run /init" line, so a board sees only U-Boot's "Starting kernel" and then an SSH login
CMDLINE="$BASE_CMDLINE"
MODULES=(virtio_pci virtio_mmio virtio_net virtio_rng)

build_root "$@"
# Take out what stage_rootfs brings for Paddock's own images: its init, its folder, root's .ssh.
mv "$ROOT/etc/paddock/modules" "$ROOT/etc/modules.order"
rm -rf "$ROOT/etc/paddock" "$ROOT/usr/bin/paddock-init" "$ROOT/usr/bin/init" "$ROOT/root/.ssh" "$ROOT/usr/share/udhcpc"
echo board > "$ROOT/etc/hostname"
install -m 755 "$RECIPES_DIR/plain/init.sh" "$ROOT/init"
if grep -rIil paddock "$ROOT"; then die "the plain image mentions paddock (files above)"; fi
pack_cpio "$ROOT" "$OUTDIR/initrd.cpio.gz"
pack_arm64_kernel
echo "$CMDLINE" > "$OUTDIR/cmdline"
echo "$KREL" > "$OUTDIR/kernel-release"
pack_bundle "$OUTDIR"
log "kernel $KREL; initrd.cpio.gz $(du -k "$OUTDIR/initrd.cpio.gz" | cut -f1) KB; total $(secs "$T0") s"
log "done: $OUTDIR"
