#!/usr/bin/env bash
# arm64-initramfs.sh OUTDIR: an arm64 boot bundle for emulated boards (QEMU virt, Debian's U-Boot,
# kernel and initrd over TFTP), built from Debian bookworm arm64 packages only.
#   OUTDIR/Image.gz         Debian's arm64 kernel (its vmlinuz is an uncompressed Image), gzipped:
#                           11 MB instead of 33 MB over TFTP; U-Boot's booti unpacks it when
#                           kernel_comp_addr_r and kernel_comp_size are set
#   OUTDIR/initrd.cpio.gz   the whole system: busybox, dropbear, virtio-pci/-mmio/-net/-rng and fw_cfg
#                           modules, init (the same guest/init.sh as the x86 images)
#   OUTDIR/cmdline          the kernel command line (console=ttyAMA0 ... paddock.ip=10.0.2.15/24,10.0.2.2)
#   OUTDIR/kernel-release   e.g. 6.1.0-56-arm64
#   OUTDIR/bundle.tar       members kernel (= Image.gz), initrd, cmdline
# At boot the guest takes root's authorized key from the kernel command line
# (paddock.authorized_key=<base64 of the authorized_keys lines>, which U-Boot passes in bootargs),
# makes a fresh ssh host key, sets its static address, announces it with a gratuitous ARP, and prints
# "paddock: ..." markers on ttyAMA0 (see guest/init.sh). The arm64 packages come through a private
# apt state (lib/common.sh apt_setup); the host's dpkg architectures are not changed.
# Boot on the U-Boot console (see README.md for the whole sequence):
#   qemu-system-aarch64 -M virt -cpu cortex-a53 -m 512 -nodefaults -display none \
#     -bios /usr/lib/u-boot/qemu_arm64/u-boot.bin \
#     -nic user,model=virtio-net-pci,mac=52:52:52:52:52:52,tftp=BUNDLEDIR,hostfwd=tcp:127.0.0.1:PORT-:22 \
#     -serial tcp:127.0.0.1:CONPORT,server=on,wait=on
#   => setenv autoload no; dhcp; setenv serverip 10.0.2.2
#   => tftpboot ${kernel_addr_r} kernel; setenv kernel_comp_addr_r 0x50000000; setenv kernel_comp_size ${filesize}
#   => tftpboot ${ramdisk_addr_r} initrd
#   => setenv bootargs "<OUTDIR/cmdline> paddock.authorized_key=<base64 -w0 KEY.pub>"
#   => booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
# (U-Boot takes at most 511 characters per typed line: append a long key to bootargs in pieces.)
set -euo pipefail
PROG=arm64-initramfs
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
set_arch arm64

# paddock.ip: a static address instead of DHCP. QEMU's user network hands out leases per MAC, and
# U-Boot's DHCP has already taken 10.0.2.15 for its own MAC (52:52:52:52:52:52); Linux, with the
# NIC's MAC, would get 10.0.2.16, where hostfwd does not point. 10.0.2.15 is hostfwd's default guest.
CMDLINE="$BASE_CMDLINE paddock.ip=10.0.2.15/24,10.0.2.2"
# virtio core is built into Debian's arm64 kernel, its transports and drivers are modules. virtio_pci
# serves -nic model=virtio-net-pci; virtio_mmio the virt machine's virtio-mmio slots
# (-netdev user,id=n0,... -device virtio-net-device,netdev=n0); qemu_fw_cfg lets an arm64 VM take its key from fw_cfg as on x86.
MODULES=(virtio_pci virtio_mmio virtio_net virtio_rng qemu_fw_cfg)

build_root "$@"
pack_initramfs
pack_arm64_kernel
echo "$CMDLINE" > "$OUTDIR/cmdline"
echo "$KREL" > "$OUTDIR/kernel-release"
pack_bundle "$OUTDIR"

log "kernel $KREL, $(wc -l < "$ROOT/etc/paddock/modules") modules;" \
    "Image.gz $(du -m "$OUTDIR/Image.gz" | cut -f1) MB ($(du -m "$X/boot/vmlinuz-$KREL" | cut -f1) MB unpacked)," \
    "initrd.cpio.gz $(du -k "$OUTDIR/initrd.cpio.gz" | cut -f1) KB;" \
    "fetch+unpack $(secs "$T0" "$T1") s, image $(secs "$T1") s, total $(secs "$T0") s"
log "done: $OUTDIR"
