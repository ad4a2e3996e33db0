#!/usr/bin/env bash
# A stand-in for your test: the example pipelines (github-actions.yml, gitlab-ci.yml) run it on each
# machine, from ci/hardware-test.sh in your repository. It reaches the machine on ssh's stdin
# (`paddock ssh MEMBER -- bash -s < ci/hardware-test.sh`), so nothing is copied there or left
# behind; its output is the step's, and its exit status the test's.
set -euo pipefail

echo "hardware test on $(uname -n) as $(id -un): $(uname -srm)"
echo "cpus: $(getconf _NPROCESSORS_ONLN), memory: $(awk '/^MemTotal:/ { print int($2 / 1024) " MiB" }' /proc/meminfo)"

# Write and read back a few MiB in a directory of its own, removed whatever happens.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
head -c 8388608 /dev/urandom >"$scratch/data"
written=$(cksum <"$scratch/data")
sync
if [ "$(cksum <"$scratch/data")" != "$written" ]; then
  echo "disk: 8 MiB read back differ from what was written" >&2
  exit 1
fi
echo "disk: 8 MiB written and read back"

echo "hardware test passed"
