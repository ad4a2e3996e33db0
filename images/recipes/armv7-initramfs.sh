#!/usr/bin/env bash
# armv7-initramfs.sh OUTDIR: an armv7 (32-bit ARM) boot bundle for emulated boards (QEMU virt with
# highmem=off, cortex-a15, Debian's qemu_arm U-Boot, kernel and initrd over TFTP), built from Debian
# bookworm armhf packages only.
#   OUTDIR/zImage           Debian's armmp-lpae kernel as the package ships it (a self-decompressing
#                           zImage, 5.3 MB), for U-Boot's bootz
#   OUTDIR/initrd.cpio.gz   the whole system: busybox, dropbear, virtio-pci/-mmio/-net/-rng modules,
#                           init (the same guest/init.sh as the other images)
#   OUTDIR/cmdline          the kernel command line (console=ttyAMA0 ... paddock.ip=10.0.2.15/24,10.0.2.2)
#   OUTDIR/kernel-release   e.g. 6.1.0-50-armmp-lpae
#   OUTDIR/bundle.tar       members kernel (= zImage), initrd, cmdline
# At boot the guest takes root's authorized key from the kernel command line
# (paddock.authorized_key=<base64 of the authorized_keys lines>, which U-Boot passes in bootargs; this
# kernel has no qemu_fw_cfg driver), makes a fresh ssh host key, sets its static address, announces it
# with a gratuitous ARP, and prints "paddock: ..." markers on ttyAMA0 (see guest/init.sh). The armhf
# packages come through a private apt state without bookworm-security (lib/common.sh apt_setup); the
# host's dpkg architectures are not changed.
# Boot on the U-Boot console (see README.md for the whole sequence):
#   qemu-system-arm -M virt,highmem=off -cpu cortex-a15 -m 512 -nodefaults -display none \
#     -bios /usr/lib/u-boot/qemu_arm/u-boot.bin \
#     -nic user,model=virtio-net-pci,mac=52:52:52:52:52:52,tftp=BUNDLEDIR,hostfwd=tcp:127.0.0.1:PORT-:22 \
#     -serial tcp:127.0.0.1:CONPORT,server=on,wait=on
#   => setenv autoload no; dhcp; setenv serverip 10.0.2.2    (or the static ipaddr/netmask/gatewayip)
#   => tftpboot ${kernel_addr_r} kernel; tftpboot ${ramdisk_addr_r} initrd
#   => setenv bootargs "<OUTDIR/cmdline> paddock.authorized_key=<base64 -w0 KEY.pub>"
#   => bootz ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}
# (bootz, not booti; no kernel_comp_* variables: the zImage unpacks itself. U-Boot takes at most 511
# characters per typed line: append a long key to bootargs in pieces.)
set -euo pipefail
PROG=armv7-initramfs
# shellcheck source-path=SCRIPTDIR source=lib/common.sh
. "$(dirname "$0")/lib/common.sh"
set_arch armhf

# paddock.ip: a static address instead of DHCP, as on arm64 (see arm64-initramfs.sh): QEMU's user
# network hands out leases per MAC, and U-Boot has already used 10.0.2.15 with its own MAC.
CMDLINE="$BASE_CMDLINE paddock.ip=10.0.2.15/24,10.0.2.2"
# virtio core is built into Debian's armmp-lpae kernel (so are the PCIe host bridge of the virt
# machine, pci-host-generic, and the PL011 UART); its transports and drivers are modules. virtio_pci
# serves -nic model=virtio-net-pci (works in U-Boot and Linux on virt,highmem=off), virtio_mmio the
# virt machine's virtio-mmio slots (-netdev user,id=n0,... -device virtio-net-device,netdev=n0: -nic
# refuses that model). There is no qemu_fw_cfg module for armhf (CONFIG_FW_CFG_SYSFS is off).
MODULES=(virtio_pci virtio_mmio virtio_net virtio_rng)

build_root "$@"
pack_initramfs
# the kernel: check it is an ARM zImage (magic 0x016f2818 at offset 0x24), then use it as it is
[ "$(od -An -tx4 -j36 -N4 "$X/boot/vmlinuz-$KREL" | tr -d ' ')" = 016f2818 ] ||
  die "boot/vmlinuz-$KREL in $KERNEL_PKG is not an ARM zImage"
cp "$X/boot/vmlinuz-$KREL" "$OUTDIR/zImage.tmp"
mv "$OUTDIR/zImage.tmp" "$OUTDIR/zImage"
echo "$CMDLINE" > "$OUTDIR/cmdline"
echo "$KREL" > "$OUTDIR/kernel-release"
pack_bundle "$OUTDIR"

log "kernel $KREL, $(wc -l < "$ROOT/etc/paddock/modules") modules;" \
    "zImage $(du -k "$OUTDIR/zImage" | cut -f1) KB, initrd.cpio.gz $(du -k "$OUTDIR/initrd.cpio.gz" | cut -f1) KB;" \
    "fetch+unpack $(secs "$T0" "$T1") s, image $(secs "$T1") s, total $(secs "$T0") s"
log "done: $OUTDIR"
