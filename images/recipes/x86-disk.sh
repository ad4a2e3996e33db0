#!/usr/bin/env bash
# x86-disk.sh OUTDIR: an x86_64 disk image for QEMU, built from Debian packages only.
#   OUTDIR/disk.qcow2       whole-disk ext4 root filesystem (no partition table), made with mkfs.ext4 -d
#                           (no mount, no loop device): busybox, dropbear, modules, init - the same system
#                           as x86-initramfs.sh, with the same fw_cfg key, DHCP and "paddock: ..." markers
#   OUTDIR/vmlinux          the same uncompressed Debian kernel as x86-initramfs.sh
#   OUTDIR/initrd.cpio.gz   a small loader (busybox + virtio_blk/ext4 modules, guest/loader-init.sh)
#   OUTDIR/cmdline          the kernel command line: ... root=/dev/vda rootfstype=ext4 rw
#   OUTDIR/kernel-release
#
# Boot: the kernel and command line come from QEMU (-kernel/-append root=/dev/vda), but Debian builds
# virtio_blk and ext4 as modules, so the kernel cannot mount root=/dev/vda on its own: the loader initrd
# (-initrd) loads them, mounts root= and switch_roots to the disk's /sbin/init. Never boot the cached
# image read-write: use snapshot=on, or a per-boot overlay
# (qemu-img create -f qcow2 -F qcow2 -b OUTDIR/disk.qcow2 overlay.qcow2).
#   qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 256 -nodefaults -no-user-config \
#     -display none -no-reboot -serial file:console.log \
#     -kernel OUTDIR/vmlinux -initrd OUTDIR/initrd.cpio.gz -append "$(cat OUTDIR/cmdline)" \
#     -drive file=OUTDIR/disk.qcow2,if=virtio,format=qcow2,snapshot=on \
#     -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub \
#     -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:PORT-:22
set -euo pipefail
PROG=x86-disk
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

CMDLINE="$BASE_CMDLINE root=/dev/vda rootfstype=ext4 rw"
DISK_MODULES=(virtio_pci virtio_blk ext4)                      # the loader needs these to mount /dev/vda
MODULES=(virtio_pci virtio_blk ext4 virtio_net virtio_rng qemu_fw_cfg)
FS_SIZE_MB=${PADDOCK_DISK_SIZE_MB:-128}   # sparse: unused space costs nothing in the qcow2
EXTRA_TOOLS=(mkfs.ext4 qemu-img)

# the root filesystem
build_root "$@"
echo "/dev/vda / ext4 rw,relatime 0 1" > "$ROOT/etc/fstab"
# mkfs.ext4 -d copies owners as they are on the build host; as root that is 0:0 already
truncate -s "${FS_SIZE_MB}M" "$WORK/root.ext4"
mkfs.ext4 -q -F -L paddock-root -d "$ROOT" -E root_owner=0:0 "$WORK/root.ext4"
qemu-img convert -f raw -O qcow2 "$WORK/root.ext4" "$OUTDIR/disk.qcow2.tmp"
mv "$OUTDIR/disk.qcow2.tmp" "$OUTDIR/disk.qcow2"

# the loader initramfs: busybox, the block/ext4 modules and loader-init.sh as /init
LOADER=$WORK/loader
mkdir -p "$LOADER"/{usr/bin,usr/lib,etc/paddock,dev,proc,sys,newroot}
ln -s usr/bin "$LOADER/bin"; ln -s usr/bin "$LOADER/sbin"; ln -s usr/lib "$LOADER/lib"
cp "$X/bin/busybox" "$LOADER/usr/bin/busybox"
for a in sh mount insmod switch_root poweroff sleep mkdir; do ln -s busybox "$LOADER/usr/bin/$a"; done
install_modules "$LOADER" "${DISK_MODULES[@]}"
install -m 755 "$GUEST_DIR/loader-init.sh" "$LOADER/init"
pack_cpio "$LOADER" "$OUTDIR/initrd.cpio.gz"

extract_vmlinux "$OUTDIR/vmlinux"
echo "$CMDLINE" > "$OUTDIR/cmdline"
echo "$KREL" > "$OUTDIR/kernel-release"

log "kernel $KREL; disk.qcow2 $(du -k "$OUTDIR/disk.qcow2" | cut -f1) KB (ext4 ${FS_SIZE_MB} MB, $(du -sk "$ROOT" | cut -f1) KB used)," \
    "loader initrd $(du -k "$OUTDIR/initrd.cpio.gz" | cut -f1) KB;" \
    "fetch+unpack $(secs "$T0" "$T1") s, image $(secs "$T1") s, total $(secs "$T0") s"
log "done: $OUTDIR"
