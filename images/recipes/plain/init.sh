#!/bin/sh
# shellcheck shell=dash
# /init of the plain board image (arm64-plain-initramfs.sh): a board's own initramfs system as a
# vendor or Buildroot would ship it, with no key hook of any lab service in it. It mounts the pseudo file
# systems, loads the NIC's modules, sets the board's fixed address, and runs dropbear the Buildroot
# way (`-R`: a host key is made on demand when none is there). There is no authorized_keys anywhere
# and no key on the kernel command line is read: the only way in is what an initramfs overlay
# appended to the initrd puts in /root/.ssh/authorized_keys and /etc/dropbear/ before this runs.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
umask 022

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
exec < /dev/console > /dev/console 2>&1
read -r name < /etc/hostname && hostname "$name"
echo "board: init started"

# modules in load order, "sysfs-name path" per line
while read -r module ko; do
  [ -n "$ko" ] && [ ! -d "/sys/module/$module" ] && insmod "$ko"
done < /etc/modules.order

# the board's fixed address on its lab network; a gratuitous ARP tells the switch (and QEMU's user
# network, which still has the bootloader's MAC for this address) where it is now
ip link set lo up
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2 dev eth0
arping -U -c 1 -I eth0 10.0.2.15 > /dev/null 2>&1 &
echo "board: network up eth0 10.0.2.15/24"

mkdir -p /etc/dropbear
dropbear -R -E -p 22 2>> /run/dropbear.log
echo "board: dropbear started"

while :; do
  setsid cttyhack sh -l
  sleep 1
done
