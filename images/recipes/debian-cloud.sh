#!/usr/bin/env bash
# debian-cloud.sh OUTDIR: a stock Debian bookworm cloud image for x86_64, of the kind users bring
# themselves: cloud-init reads its NoCloud seed, and nothing of Paddock is in it (no key hook, no
# markers). Built from Debian packages with mmdebstrap, so it needs root (--mode=root).
#   OUTDIR/disk.qcow2   a BIOS-bootable disk (compressed qcow2, ~280 MB; 3 GiB virtual): an MBR with one
#                       ext4 partition, GRUB in the MBR gap, the Debian kernel and its own initramfs
#
# The system: systemd, udev, openssh-server, cloud-init with netplan.io (systemd-networkd renders the
# network config, as in Debian's own cloud images), sudo. cloud-init's default user is `debian`
# (Debian's cloud.cfg). openssh-server's postinst makes host keys and the bootstrap a machine-id: both
# are removed, so every instance makes its own (or gets them from its seed: cloud-init's ssh_keys).
#
# The disk is assembled without mounting and without loop devices: `mkfs.ext4 -d` fills the root
# filesystem from the directory, `sfdisk` writes the partition table, and GRUB goes in with dd:
# grub-mkimage makes core.img (biosdisk, part_msdos, ext2; prefix on partition 1) for the MBR gap at
# sector 1, and boot.img's first 440 bytes become the boot code of the MBR (the partition table stays).
# GRUB's modules and boot.img come from the image's own grub-pc-bin. grub.cfg boots the /vmlinuz and
# /initrd.img links, which the kernel package keeps current, with the console on ttyS0 too.
#
# Boot (fully from disk; never boot the cached image read-write, use a per-boot overlay):
#   qemu-img create -f qcow2 -F qcow2 -b OUTDIR/disk.qcow2 overlay.qcow2
#   qemu-system-x86_64 -machine q35,accel=tcg -m 1024 -nodefaults -display none -serial stdio \
#     -drive file=overlay.qcow2,if=virtio,format=qcow2 -drive file=seed.iso,if=virtio,format=raw,readonly=on \
#     -nic user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:PORT-:22 -device virtio-rng-pci
# seed.iso: a NoCloud `cidata` volume with meta-data and user-data (genisoimage -volid cidata -joliet -rock).
#
# Environment: PADDOCK_DEBIAN_MIRROR (default http://deb.debian.org/debian), PADDOCK_DEBIAN_SECURITY
# (default http://deb.debian.org/debian-security), PADDOCK_CLOUD_DISK_SIZE (default 3G).
set -euo pipefail
PROG=debian-cloud
log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $PROG OUTDIR" >&2; exit 2; fi
[ "$(id -u)" -eq 0 ] || die "run as root (mmdebstrap --mode=root, and root-owned files in the image)"
for tool in mmdebstrap mkfs.ext4 sfdisk grub-mkimage qemu-img; do
  command -v "$tool" >/dev/null || die "$tool is missing: install images/recipes/packages.txt"
done
MIRROR=${PADDOCK_DEBIAN_MIRROR:-http://deb.debian.org/debian}
SECURITY=${PADDOCK_DEBIAN_SECURITY:-http://deb.debian.org/debian-security}
DISK_SIZE=${PADDOCK_CLOUD_DISK_SIZE:-3G}
OUTDIR=$1
mkdir -p "$OUTDIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/paddock-debian-cloud.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
ROOT=$WORK/rootfs
start=$(date +%s)

mmdebstrap --mode=root --variant=minbase --format=directory --quiet \
  --include=linux-image-amd64,systemd-sysv,udev,dbus,openssh-server,cloud-init,cloud-guest-utils,netplan.io,iproute2,netbase,sudo,grub-pc-bin \
  --customize-hook='rm -f "$1"/etc/ssh/ssh_host_*_key "$1"/etc/ssh/ssh_host_*_key.pub' \
  --customize-hook=': > "$1"/etc/machine-id; rm -f "$1"/var/lib/dbus/machine-id' \
  --customize-hook='echo localhost > "$1"/etc/hostname' \
  --customize-hook='printf "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" > "$1"/etc/hosts' \
  bookworm "$ROOT" "deb $MIRROR bookworm main" "deb $MIRROR bookworm-updates main" "deb $SECURITY bookworm-security main" \
  >"$WORK/mmdebstrap.log" 2>&1 || { tail -30 "$WORK/mmdebstrap.log" >&2; die "mmdebstrap failed"; }
[ -e "$ROOT/vmlinuz" ] && [ -e "$ROOT/initrd.img" ] || die "the kernel package made no /vmlinuz and /initrd.img links"
log "root filesystem in $(($(date +%s) - start)) s, $(du -sm "$ROOT" | cut -f1) MB"

# Boot configuration: the root filesystem by a UUID chosen here, GRUB's modules where its prefix says.
UUID=$(cat /proc/sys/kernel/random/uuid)
echo "UUID=$UUID / ext4 rw,discard,errors=remount-ro 0 1" > "$ROOT/etc/fstab"
GRUB_MODULES=$ROOT/usr/lib/grub/i386-pc
mkdir -p "$ROOT/boot/grub/i386-pc"
cp "$GRUB_MODULES"/*.mod "$GRUB_MODULES"/*.lst "$ROOT/boot/grub/i386-pc/"
cat > "$ROOT/boot/grub/grub.cfg" <<CFG
set timeout=0
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $UUID
linux /vmlinuz root=UUID=$UUID ro console=tty0 console=ttyS0,115200
initrd /initrd.img
boot
CFG

# The disk: MBR with one bootable partition from 1 MiB, its ext4 made from the directory.
RAW=$WORK/disk.raw
truncate -s "$DISK_SIZE" "$RAW"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$RAW"
truncate -s $(($(stat -c %s "$RAW") - 2048 * 512)) "$WORK/root.ext4"
mkfs.ext4 -q -F -L cloudimg-rootfs -U "$UUID" -d "$ROOT" "$WORK/root.ext4"
dd if="$WORK/root.ext4" of="$RAW" bs=1M seek=1 conv=notrunc,sparse status=none
rm -f "$WORK/root.ext4"
grub-mkimage -O i386-pc -d "$GRUB_MODULES" -o "$WORK/core.img" -p '(hd0,msdos1)/boot/grub' biosdisk part_msdos ext2
[ "$(stat -c %s "$WORK/core.img")" -lt $((2047 * 512)) ] || die "GRUB's core.img does not fit the MBR gap"
dd if="$GRUB_MODULES/boot.img" of="$RAW" bs=440 count=1 conv=notrunc status=none
dd if="$WORK/core.img" of="$RAW" bs=512 seek=1 conv=notrunc status=none

qemu-img convert -c -f raw -O qcow2 "$RAW" "$OUTDIR/disk.qcow2.tmp"
mv "$OUTDIR/disk.qcow2.tmp" "$OUTDIR/disk.qcow2"
log "disk.qcow2 $(du -m "$OUTDIR/disk.qcow2" | cut -f1) MB in $(($(date +%s) - start)) s"
