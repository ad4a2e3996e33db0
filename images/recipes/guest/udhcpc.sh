#!/bin/sh
# shellcheck shell=dash
# udhcpc event script for the Paddock test images (busybox ships none). udhcpc exports
# interface, ip, mask (prefix length), router, dns. Writes "ifname ip prefix gw" to /run/paddock/net
# for init's "network up" marker.
# shellcheck disable=SC2154  # variables come from udhcpc's environment
case $1 in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    if [ -n "${router:-}" ]; then
      ip route replace default via "${router%% *}" dev "$interface"
    fi
    mkdir -p /run/paddock
    echo "$interface $ip ${mask:-24} ${router%% *}" > /run/paddock/net
    : > /run/resolv.conf
    for ns in ${dns:-}; do echo "nameserver $ns" >> /run/resolv.conf; done
    ;;
esac
exit 0
