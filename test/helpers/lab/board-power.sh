#!/bin/bash
# The emulated lab's power outlets: outlet N switches board N, a QEMU virt machine running
# Debian's U-Boot: arm64 (cortex-a53), or armv7 (cortex-a15) when LAB/boardN/armv7 exists. pdudaemon's localcmdline driver runs it ("board-power.sh LAB on|off N"); the
# command driver can run it too, and "status" reads an outlet back.
#   LAB/boardN/tty.qemu   the board side of its persistent serial line (a socat pty pair)
#   LAB/boardN/ssh-port   the loopback port forwarded to the board's SSH
#   LAB/boardN/broken     if present, the board's firmware is missing (it never reaches U-Boot)
#   LAB/boardN/fail-boots if present, a count: that many more power-ons leave the console silent, as broken does
#   LAB/boardN/disk.img   if present, the board's storage (a virtio disk U-Boot can write)
# pdudaemon runs commands one at a time per PDU, so this must return quickly: QEMU is daemonized.
set -u
LAB=$1 CMD=$2 N=$3
DIR=$LAB/board$N PID=$LAB/board$N/qemu.pid
# A zombie (exited, not yet reaped by whoever adopted the daemon) is not alive.
alive() {
  local pid
  pid=$(cat "$PID" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$pid/stat" 2>/dev/null
}
echo "$(date +%s.%N) $CMD $N" >> "$LAB/power.log"
case $CMD in
  on)
    alive && exit 0
    qemu=(qemu-system-aarch64 -M virt -cpu cortex-a53) bios=/usr/lib/u-boot/qemu_arm64/u-boot.bin
    if [ -e "$DIR/armv7" ]; then qemu=(qemu-system-arm -M virt,highmem=off -cpu cortex-a15) bios=/usr/lib/u-boot/qemu_arm/u-boot.bin; fi
    [ -e "$DIR/broken" ] && bios=/dev/null
    fails=$(cat "$DIR/fail-boots" 2>/dev/null || echo 0)
    if [ "$fails" -gt 0 ] 2>/dev/null; then bios=/dev/null; echo $((fails - 1)) > "$DIR/fail-boots"; fi
    storage=()
    [ -e "$DIR/disk.img" ] && storage=(-drive "if=none,file=$DIR/disk.img,format=raw,id=storage" -device virtio-blk-pci,drive=storage)
    # A QEMU that was just switched off may hold the SSH forward a moment longer on a loaded
    # machine: a start that fails is tried again for a while (every failure is in qemu.err).
    for _ in $(seq 40); do
      "${qemu[@]}" -m 512 -nodefaults -display none \
        -bios "$bios" \
        -nic "user,model=virtio-net-pci,mac=52:52:52:52:52:52,hostfwd=tcp:127.0.0.1:$(cat "$DIR/ssh-port")-:22" \
        -chardev "serial,id=con,path=$DIR/tty.qemu" -serial chardev:con "${storage[@]}" \
        -pidfile "$PID" -daemonize 2>> "$DIR/qemu.err" && exit 0
      sleep 0.25
    done
    exit 1 ;;
  off)
    # Power is cut: TERM, then KILL if QEMU lingers; the pid file goes only once it is gone.
    if alive; then
      kill "$(cat "$PID")" 2>/dev/null
      for _ in $(seq 100); do alive || break; sleep 0.05; done
      if alive; then
        kill -9 "$(cat "$PID")" 2>/dev/null
        for _ in $(seq 200); do alive || break; sleep 0.05; done
      fi
    fi
    rm -f "$PID" ;;
  status)
    if alive; then echo on; else echo off; fi ;;
esac
