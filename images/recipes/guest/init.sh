#!/bin/sh
# shellcheck shell=dash
# Paddock test image init (busybox sh), PID 1. Installed as /usr/bin/paddock-init, which is /sbin/init
# in both images and /init in the initramfs. In the disk image the loader initramfs runs first and
# switch_roots here.
#
# Console markers (one line each, on the serial console; "t=" is the guest uptime in seconds):
#   paddock: kernel booted <release> t=...
#   paddock: authorized key installed (<type> <comment>) t=...   | paddock: error: ... (no key)
#   paddock: network up <ifname> <ip>/<prefix> gw <gw> t=...        | paddock: error: ... (no DHCP lease)
#   paddock: ssh host key <ssh-ed25519 AAAA...>                     (lets a client pin the per-boot host key)
#   paddock: ssh ready port 22 t=...
# The root account has no password; the only way in over the network is the public key that QEMU
# passes per boot with  -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022

FW_KEY=/sys/firmware/qemu_fw_cfg/by_name/opt/paddock/authorized_keys/raw
HOSTKEY=/run/dropbear/dropbear_ed25519_host_key

say() {
  up=$(cut -d' ' -f1 /proc/uptime 2>/dev/null)
  echo "paddock: $* t=${up:-?}" > /dev/console
}
mounted() { grep -q "^[^ ]* $1 " /proc/mounts 2>/dev/null; }

[ -e /proc/self ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
# /run and /tmp are RAM in both images, so a disk image gets no per-boot state written into it
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
exec < /dev/console > /dev/console 2>&1
say "kernel booted $(uname -r)"

# busybox poweroff/halt/reboot signal PID 1; with QEMU's -no-reboot a reboot also ends QEMU
trap 'sync; poweroff -f' USR2
trap 'sync; halt -f' USR1
trap 'sync; reboot -f' TERM

hostname -F /etc/hostname 2>/dev/null || hostname paddock
# files from a disk image built by a non-root user may not be root's
chown 0:0 /root /root/.ssh 2>/dev/null
chmod 700 /root /root/.ssh

# modules in the order the build resolved them (some may already be loaded by the disk loader)
while read -r ko; do
  [ -n "$ko" ] || continue
  name=$(basename "$ko"); name=${name%%.ko*}
  [ -d "/sys/module/$(echo "$name" | tr - _)" ] && continue
  insmod "$ko" || say "error: insmod $ko failed"
done < /etc/paddock/modules

# the reservation's key: written fresh every boot (never appended), so a reused disk keeps no old key
AK=/root/.ssh/authorized_keys
i=0
while [ ! -e "$FW_KEY" ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
# (sysfs reports size 0 for fw_cfg's raw files, so test the content, not the size)
: > "$AK.tmp"; chmod 600 "$AK.tmp"
if [ -e "$FW_KEY" ]; then
  { cat "$FW_KEY"; echo; } | tr -d '\r\000' | sed '/^[[:space:]]*$/d' > "$AK.tmp"
fi
mv "$AK.tmp" "$AK"
if [ -s "$AK" ]; then
  say "authorized key installed ($(awk '{ print $1, $NF; exit }' "$AK"))"
else
  say "error: no authorized key (QEMU needs -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub)"
fi

# network: DHCP from QEMU's user-mode network (slirp answers at once); the lease is used as a static
# configuration (udhcpc -q), which is fine for slirp and avoids a renew daemon
ip link set lo up
IF=eth0
i=0
while [ ! -e /sys/class/net/$IF ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
if [ ! -e /sys/class/net/$IF ]; then
  for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || { IF=${n##*/}; break; }; done
fi
ip link set "$IF" up 2>/dev/null
if udhcpc -i "$IF" -f -q -n -t 5 -T 1 -A 1 -s /usr/share/udhcpc/default.script > /run/udhcpc.log 2>&1; then
  addr=$(ip -4 -o addr show dev "$IF" | awk '{ print $4; exit }')
  gw=$(ip -4 route show default | awk '{ print $3; exit }')
  say "network up $IF $addr gw $gw"
else
  say "error: no DHCP lease on $IF ($(tail -n 1 /run/udhcpc.log))"
fi

# ssh: a fresh host key every boot, key-only logins (-s), root allowed
mkdir -p /run/dropbear
dropbearkey -t ed25519 -f "$HOSTKEY" > /dev/null 2>&1 || say "error: dropbearkey failed"
echo "paddock: ssh host key $(dropbearkey -y -f "$HOSTKEY" 2>/dev/null | grep '^ssh-' | cut -d' ' -f1-2)" > /dev/console
(
  while :; do
    dropbear -F -E -s -p 22 -r "$HOSTKEY" -P /run/dropbear.pid 2>> /var/log/dropbear.log
    echo "paddock: error: dropbear exited ($?), restarting" > /dev/console
    sleep 1
  done
) &
# ready = listening on port 22 (0016) in /proc/net/tcp or tcp6 (state 0A = LISTEN)
i=0
while ! grep -qE '^ *[0-9]+: [0-9A-F]+:0016 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
  [ $i -lt 100 ] || { say "error: dropbear is not listening on port 22"; break; }
  sleep 0.05; i=$((i + 1))
done
[ $i -lt 100 ] && say "ssh ready port 22"

# a root shell on the serial console (the lab's console, like a board's UART), respawned
while :; do
  setsid cttyhack sh -l
  sleep 1
done
