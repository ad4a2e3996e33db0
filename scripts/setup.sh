#!/usr/bin/env bash
# Installs what Paddock and its tests need on Debian bookworm with Node 20: PostgreSQL (api/packages.txt:
# the API's database for several servers; the tests run throwaway clusters of it), the OpenSSH server and
# client (static hosts in the demo and the tests are real sshd processes), QEMU and the tools the
# image recipes use (images/recipes/packages.txt), the lab parts boards need and their tests use
# (boards/packages.txt: pdudaemon, tftpd-hpa, snmpd, socat; iproute2 for the lab in network namespaces; cpio and dropbear-bin for the initrd overlays of images with access overlay; web/packages.txt: chromium for the dashboard's browser tests; clients/python/packages.txt: the Python client's
# dependencies, pytest and mypy; cli/packages.txt: zsh and fish for the completion tests; deploy/packages.txt: buildah, systemd, curl,
# nginx-light, caddy and openssl for the deployment tests), the npm dependencies, and the x86 test images
# (built once from Debian packages and cached). Safe to run again; it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null || need+=(openssh-client)
command -v ssh-keygen >/dev/null || need+=(openssh-client)
# Runner hosts check job scripts out with git; the API resolves refs with it.
command -v git >/dev/null || need+=(git)
while read -r package; do
  case $package in '' | '#'*) continue ;; esac
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || need+=("$package")
done < <(cat api/packages.txt images/recipes/packages.txt boards/packages.txt web/packages.txt clients/python/packages.txt cli/packages.txt deploy/packages.txt)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then echo "setup: run as root to install ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
mkdir -p /run/sshd 2>/dev/null || true
# Where installing starts the packaged daemons, stop them: Paddock and its tests run their own
# tftpd-hpa (on 127.0.0.1:69, for the staging root), pdudaemon, snmpd, nginx and caddy, and PostgreSQL
# clusters of their own.
for service in tftpd-hpa pdudaemon snmpd nginx caddy postgresql; do
  if command -v service >/dev/null && service "$service" status >/dev/null 2>&1; then service "$service" stop >/dev/null 2>&1 || true; fi
done

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# The `paddock` command runs the compiled code (bin/paddock.js): build it.
npm run --silent build

# The test images (kernel + initramfs bundles, a qcow2 disk bundle, and as root a stock Debian cloud
# image, about 3 minutes to build with mmdebstrap): a stamp check when cached.
bash images/recipes/build-test-images.sh >/dev/null
