#!/usr/bin/env bash
# x86-initramfs.sh OUTDIR: an x86_64 boot bundle for QEMU, built from Debian packages only.
#   OUTDIR/vmlinux          uncompressed kernel (ELF, booted through its PVH entry) from Debian's linux-image
#   OUTDIR/initrd.cpio.gz   the whole system: busybox, dropbear, virtio-net/virtio-rng/fw_cfg modules, init
#   OUTDIR/cmdline          the kernel command line
#   OUTDIR/kernel-release   e.g. 6.1.0-56-amd64
# At boot the guest takes root's authorized key from fw_cfg, makes a fresh ssh host key, gets its address
# by DHCP and prints "paddock: ..." markers on ttyS0 (see guest/init.sh). Boot it with:
#   qemu-system-x86_64 -machine q35,accel=tcg -cpu max -smp 1 -m 256 -nodefaults -no-user-config \
#     -display none -no-reboot -serial file:console.log \
#     -kernel OUTDIR/vmlinux -initrd OUTDIR/initrd.cpio.gz -append "$(cat OUTDIR/cmdline)" \
#     -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub \
#     -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:PORT-:22
set -euo pipefail
PROG=x86-initramfs
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"

CMDLINE="$BASE_CMDLINE"
MODULES=(virtio_pci virtio_net virtio_rng qemu_fw_cfg)

build_root "$@"
pack_initramfs
extract_vmlinux "$OUTDIR/vmlinux"
echo "$CMDLINE" > "$OUTDIR/cmdline"
echo "$KREL" > "$OUTDIR/kernel-release"

log "kernel $KREL, $(wc -l < "$ROOT/etc/paddock/modules") modules;" \
    "vmlinux $(du -m "$OUTDIR/vmlinux" | cut -f1) MB, initrd.cpio.gz $(du -k "$OUTDIR/initrd.cpio.gz" | cut -f1) KB;" \
    "fetch+unpack $(secs "$T0" "$T1") s, image $(secs "$T1") s, total $(secs "$T0") s"
log "done: $OUTDIR"
