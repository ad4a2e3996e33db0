#!/usr/bin/env bash
# test/cloud/stats.sh [STATE_DIR] [IDLE_SECONDS] - RSS/PSS per service of the test cloud (process
# groups recorded by up.sh) and, if IDLE_SECONDS > 0, the CPU they use over that idle window.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
SD=$(ptc_state_dir "${1:-}")
W=${2:-0}
[ -d "$SD/pids" ] || { echo "no $SD/pids" >&2; exit 1; }
tot=0; totp=0; n=0
printf '%-15s %5s %8s %8s\n' service procs RSS_MiB PSS_MiB
for f in "$SD"/pids/*.pid; do
  rss=0; pss=0; c=0
  for p in $(ptc_group_members "$f"); do
    r=$(awk '/^VmRSS/ { print $2 }' "/proc/$p/status" 2>/dev/null || true)
    s=$(awk '/^Pss:/ { print $2 }' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    rss=$((rss + ${r:-0})); pss=$((pss + ${s:-0})); c=$((c + 1))
  done
  printf '%-15s %5d %8d %8d\n' "$(basename "$f" .pid)" $c $((rss / 1024)) $((pss / 1024))
  tot=$((tot + rss)); totp=$((totp + pss)); n=$((n + c))
done
printf '%-15s %5d %8d %8d\n' TOTAL $n $((tot / 1024)) $((totp / 1024))
[ "$W" -gt 0 ] || exit 0
ticks() {
  local t=0 f p x
  for f in "$SD"/pids/*.pid; do
    for p in $(ptc_group_members "$f"); do
      x=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || true); t=$((t + ${x:-0}))
    done
  done
  echo $t
}
a=$(ticks); sleep "$W"; b=$(ticks); hz=$(getconf CLK_TCK)
awk -v d=$((b - a)) -v hz="$hz" -v w="$W" 'BEGIN { printf "idle CPU over %d s: %.2f cpu-seconds = %.1f%% of one core\n", w, d / hz, 100 * d / hz / w }'
