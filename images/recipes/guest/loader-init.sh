#!/bin/sh
# shellcheck shell=dash
# /init of the disk image's loader initramfs. Debian's kernel has virtio_blk and ext4 as modules, so
# it cannot mount root=/dev/vda by itself: this loads them, mounts root= (rootfstype=, ro/rw from the
# kernel command line) and switch_roots to its /sbin/init (or init=). On failure it says why on the
# console and powers off, so QEMU (-no-reboot) exits instead of hanging.
export PATH=/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

fail() {
  echo "paddock: error: loader: $*" > /dev/console
  sleep 1
  poweroff -f
}

root=; fstype=ext4; mode=rw; init=/sbin/init
read -r cmdline < /proc/cmdline
for arg in $cmdline; do
  case $arg in
    root=*) root=${arg#root=} ;;
    rootfstype=*) fstype=${arg#rootfstype=} ;;
    ro|rw) mode=$arg ;;
    init=*) init=${arg#init=} ;;
  esac
done
[ -n "$root" ] || fail "no root= on the kernel command line"

# "No such device" is fine (a CPU-specific variant such as crc32c-intel without SSE4.2; the generic
# module follows); anything else is reported, and a missing driver shows up as a failed mount below.
while read -r _ ko; do
  [ -n "$ko" ] || continue
  insmod "$ko" 2> /insmod.err && continue
  read -r err < /insmod.err
  case $err in *"No such device"*) ;; *) echo "paddock: error: loader: $err" > /dev/console ;; esac
done < /etc/paddock/modules

i=0
while [ ! -b "$root" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
[ -b "$root" ] || fail "$root did not appear (is the disk attached with if=virtio?)"
mkdir -p /newroot
mount -t "$fstype" -o "$mode" "$root" /newroot || fail "cannot mount $root ($fstype, $mode)"
[ -x "/newroot$init" ] || [ -L "/newroot$init" ] || fail "$root has no $init"
echo "paddock: loader: mounted $root ($fstype, $mode)" > /dev/console
for d in /dev /proc /sys; do mount --move "$d" "/newroot$d"; done
exec switch_root /newroot "$init"
