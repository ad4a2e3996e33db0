#!/bin/sh
# shellcheck shell=dash
# Paddock test image init (busybox sh), PID 1. Installed as /usr/bin/paddock-init, which is /sbin/init
# in both images and /init in the initramfs. In the disk image the loader initramfs runs first and
# switch_roots here.
#
# The same init runs on x86_64 (console ttyS0), arm64 and armv7 (ttyAMA0): it uses whatever console= the
# kernel command line names (/dev/console), and the console shell finds the real tty (cttyhack).
#
# Console markers (one line each, on the serial console; "t=" is the guest uptime in seconds):
#   paddock: kernel booted <release> t=...
#   paddock: authorized key installed (<type> <comment>) t=...   | paddock: error: no authorized key ...
#   paddock: network up <ifname> <ip>/<prefix> gw <gw> t=...        | paddock: error: no DHCP lease ...
#   paddock: ssh host key ssh-ed25519 AAAA...                       (lets a client pin the per-boot host key)
#   paddock: ssh ready port 22 t=...
# or, with paddock.network=off, only
#   paddock: network off (paddock.network=off): console only t=...
# The root account has no password; the only way in over the network is the reservation's public key,
# passed per boot in one of two ways (both are used when both are there):
#   kernel command line   paddock.authorized_key=<base64 of the authorized_keys line(s)>  (boards:
#                         U-Boot's bootargs; may be repeated)
#   QEMU fw_cfg           -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub  (x86 VMs; the armv7
#                         kernel has no qemu_fw_cfg driver)
# Other kernel command line switches:
#   paddock.network=off                  no network and no ssh server, only the console shell
#   paddock.ip=ADDR/PREFIX[,GATEWAY]     a static address instead of DHCP (the arm64 and armv7 bundles
#                                        set 10.0.2.15/24,10.0.2.2: see arm64-initramfs.sh)
# Either way the guest sends a gratuitous ARP for its address once it is up: QEMU's user network
# keeps the MAC it last saw for 10.0.2.15, which on a board is U-Boot's (52:52:52:52:52:52), and
# would send host-forwarded connections there instead of to Linux's NIC.
# Every fork+exec costs milliseconds under TCG, so this sticks to shell builtins where it can.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022

FW_KEY=/sys/firmware/qemu_fw_cfg/by_name/opt/paddock/authorized_keys/raw
HOSTKEY=/run/dropbear/dropbear_ed25519_host_key
AK=/root/.ssh/authorized_keys

say() {
  up='?'
  [ -r /proc/uptime ] && read -r up _ < /proc/uptime
  echo "paddock: $* t=$up" > /dev/console
}
mounted() {
  [ -r /proc/mounts ] || return 1
  while read -r _ mp _; do [ "$mp" = "$1" ] && return 0; done < /proc/mounts
  return 1
}

[ -r /proc/mounts ] || mount -t proc proc /proc
mounted /sys || mount -t sysfs sysfs /sys
mounted /dev || mount -t devtmpfs devtmpfs /dev
[ -d /dev/pts ] || mkdir /dev/pts
mounted /dev/pts || mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
# /run and /tmp are RAM in both images, so a disk image gets no per-boot state written into it
mounted /run || mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
mounted /tmp || mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
exec < /dev/console > /dev/console 2>&1
read -r release < /proc/sys/kernel/osrelease
say "kernel booted $release"

# paddock.* switches on the kernel command line (the kernel ignores dotted names it does not know).
# A value may be quoted (name="value"); no value here contains spaces.
cmdline_keys=; network=on; static_ip=
read -r cmdline < /proc/cmdline
set -f
for arg in $cmdline; do
  value=${arg#*=}; value=${value#\"}; value=${value%\"}
  case $arg in
    paddock.authorized_key=*) cmdline_keys="$cmdline_keys $value" ;;
    paddock.network=*) network=$value ;;
    paddock.ip=*) static_ip=$value ;;
  esac
done
set +f
case $network in off | no | 0 | false) network=off ;; *) network=on ;; esac

# busybox poweroff/halt/reboot signal PID 1 (USR2/USR1/TERM); with QEMU's -no-reboot a reboot also
# ends QEMU. PID 1 only waits with the `wait` builtin below, which traps interrupt.
stop() {
  echo "paddock: $1" > /dev/console
  sync
  mount -o remount,ro / 2>/dev/null
  "$1" -f
}
trap 'stop poweroff' USR2
trap 'stop halt' USR1
trap 'stop reboot' TERM

read -r name < /etc/hostname && hostname "$name"
# a disk image built by a non-root user has the build user's files; ssh insists on these being root's
chown 0:0 /root /root/.ssh
chmod 700 /root /root/.ssh

# modules in the order the build resolved them ("sysfs-name path"); the disk loader has loaded some.
# "No such device" is not an error: CPU-specific variants (crc32c-intel without SSE4.2) refuse to load
# and the generic one next in the list takes over.
while read -r name ko; do
  [ -n "$ko" ] || continue
  [ -d "/sys/module/$name" ] && continue
  insmod "$ko" 2> /run/insmod.err && continue
  read -r err < /run/insmod.err
  case $err in *"No such device"*) ;; *) say "error: $err" ;; esac
done < /etc/paddock/modules

# the reservation's key, written fresh every boot (never appended: a reused disk keeps no old key):
# the command line's keys, then fw_cfg's. qemu_fw_cfg fills by_name/ when it loads; sysfs reports
# size 0 for its raw files, so test the content. Without a key on the command line init waits up to
# 2 s for fw_cfg; with one it only takes fw_cfg's if it is there already.
install_keys() {
  : > "$AK.tmp"
  chmod 600 "$AK.tmp"
  for k in $cmdline_keys; do
    while [ $((${#k} % 4)) -ne 0 ]; do k="$k="; done   # base64 without its padding is fine too
    if printf '%s\n' "$k" | base64 -d > /run/paddock/key 2>/dev/null; then
      { tr -d '\r\000' < /run/paddock/key; echo; } >> "$AK.tmp"
    else
      say "error: paddock.authorized_key is not valid base64"
    fi
  done
  if [ -z "$cmdline_keys" ] && [ -d /sys/module/qemu_fw_cfg ]; then
    i=0
    while [ ! -d /sys/firmware/qemu_fw_cfg/by_name ] && [ $i -lt 20 ]; do sleep 0.1; i=$((i + 1)); done
  fi
  [ -e "$FW_KEY" ] && { tr -d '\r\000' < "$FW_KEY"; echo; } >> "$AK.tmp"
  mv "$AK.tmp" "$AK"
  key=
  while read -r type _ comment; do
    [ -n "$type" ] && { key="$type $comment"; break; }
  done < "$AK"
  if [ -n "$key" ]; then
    say "authorized key installed ($key)"
  else
    say "error: no authorized key (pass paddock.authorized_key=<base64 of KEY.pub> on the kernel" \
        "command line, or QEMU -fw_cfg name=opt/paddock/authorized_keys,file=KEY.pub)"
  fi
}

# network: DHCP from QEMU's user-mode network (slirp answers at once), or paddock.ip's static address.
# The lease is kept as a static configuration (udhcpc -q), which suits slirp and needs no renew
# daemon. The udhcpc event script (or the static branch) writes "ifname ip prefix gw" to
# /run/paddock/net.
start_network() {
  ip link set lo up
  IF=eth0
  i=0
  while [ ! -e /sys/class/net/$IF ] && [ $i -lt 30 ]; do sleep 0.1; i=$((i + 1)); done
  if [ ! -e /sys/class/net/$IF ]; then
    for n in /sys/class/net/*; do [ "${n##*/}" = lo ] || { IF=${n##*/}; break; }; done
  fi
  if [ -n "$static_ip" ]; then
    addr=${static_ip%%,*}; gw=
    case $static_ip in *,*) gw=${static_ip#*,} ;; esac
    case $addr in */*) ;; *) addr=$addr/24 ;; esac
    if ip link set "$IF" up && ip addr add "$addr" dev "$IF" &&
       { [ -z "$gw" ] || ip route add default via "$gw" dev "$IF"; }; then
      echo "$IF ${addr%/*} ${addr#*/} ${gw:-none}" > /run/paddock/net
    else
      say "error: cannot set paddock.ip=$static_ip on $IF"
      return
    fi
  elif ! udhcpc -i "$IF" -f -q -n -t 5 -T 1 -A 1 -s /usr/share/udhcpc/default.script > /run/paddock/udhcpc.log 2>&1; then
    say "error: no DHCP lease on $IF (see /run/paddock/udhcpc.log)"
    return
  fi
  if read -r ifname ip prefix gw < /run/paddock/net; then
    # gratuitous ARP (see the top): QEMU's user network then sends hostfwd traffic to this NIC
    arping -U -c 1 -I "$ifname" "$ip" > /dev/null 2>&1 &
    say "network up $ifname $ip/$prefix gw $gw"
  else
    say "error: no address on $IF (see /run/paddock/udhcpc.log)"
  fi
}

# ssh: a fresh host key every boot, key-only logins (-s), root allowed
start_ssh() {
  mkdir -p /run/dropbear
  dropbearkey -t ed25519 -f "$HOSTKEY" > /run/dropbear/keygen.log 2>&1 || say "error: dropbearkey failed"
  while read -r line; do
    case $line in ssh-*) echo "paddock: ssh host key ${line% *}" > /dev/console; break ;; esac
  done < /run/dropbear/keygen.log
  (
    while :; do
      dropbear -F -E -s -p 22 -r "$HOSTKEY" -P /run/dropbear.pid 2>> /var/log/dropbear.log
      echo "paddock: error: dropbear exited ($?), restarting" > /dev/console
      sleep 1
    done
  ) &
  # ready = listening on port 22 (0016) in /proc/net/tcp or tcp6 (state 0A = LISTEN)
  i=0
  until grep -qE '^ *[0-9]+: [0-9A-F]+:0016 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; do
    i=$((i + 1))
    [ $i -le 200 ] || break
    sleep 0.02
  done
  if [ $i -le 200 ]; then say "ssh ready port 22"; else say "error: dropbear is not listening on port 22"; fi
}

mkdir -p /run/paddock
if [ "$network" = off ]; then
  ip link set lo up
  say "network off (paddock.network=off): console only"
else
  install_keys
  start_network
  start_ssh
fi

# a root shell on the serial console (the lab's console, like a board's UART), respawned. It runs in
# the background so that PID 1 sits in `wait`, where the shutdown traps above can run.
while :; do
  setsid cttyhack sh -l < /dev/console > /dev/console 2>&1 &
  wait $!
  sleep 1
done
