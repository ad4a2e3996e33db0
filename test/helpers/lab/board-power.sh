#!/bin/bash
# The emulated lab's power outlets: outlet N switches board N, a QEMU virt machine running
# Debian's U-Boot: arm64 (cortex-a53), or armv7 (cortex-a15) when LAB/boardN/armv7 exists. pdudaemon's localcmdline driver runs it ("board-power.sh LAB on|off N"); the
# command driver can run it too, and "status" reads an outlet back.
#   LAB/boardN/tty.qemu   the board side of its persistent serial line (a socat pty pair)
#   LAB/boardN/ssh-port   the loopback port forwarded to the board's SSH
#   LAB/boardN/broken     if present, the board's firmware is missing (it never reaches U-Boot)
#   LAB/boardN/disk.img   if present, the board's storage (a virtio disk U-Boot can write)
# pdudaemon runs commands one at a time per PDU, so this must return quickly: QEMU is daemonized.
set -u
LAB=$1 CMD=$2 N=$3
DIR=$LAB/board$N PID=$LAB/board$N/qemu.pid
alive() { [ -f "$PID" ] && kill -0 "$(cat "$PID" 2>/dev/null)" 2>/dev/null; }
echo "$(date +%s.%N) $CMD $N" >> "$LAB/power.log"
case $CMD in
  on)
    alive && exit 0
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a53) bios=/usr/lib/u-boot/qemu_arm64/u-boot.bin
    if [ -e "$DIR/armv7" ]; then qemu=(qemu-system-arm -M virt,highmem=off -cpu cortex-a15) bios=/usr/lib/u-boot/qemu_arm/u-boot.bin; fi
    [ -e "$DIR/broken" ] && bios=/dev/null
    storage=()
    [ -e "$DIR/disk.img" ] && storage=(-drive "if=none,file=$DIR/disk.img,format=raw,id=storage" -device virtio-blk-pci,drive=storage)
    "${qemu[@]}" -m 512 -nodefaults -display none \
      -bios "$bios" \
      -nic "user,model=virtio-net-pci,mac=52:52:52:52:52:52,hostfwd=tcp:127.0.0.1:$(cat "$DIR/ssh-port")-:22" \
      -chardev "serial,id=con,path=$DIR/tty.qemu" -serial chardev:con "${storage[@]}" \
      -pidfile "$PID" -daemonize 2>> "$DIR/qemu.err" ;;
  off)
    if alive; then
      kill "$(cat "$PID")"
      for _ in $(seq 100); do alive || break; sleep 0.05; done
    fi
    rm -f "$PID" ;;
  status)
    if alive; then echo on; else echo off; fi ;;
esac
