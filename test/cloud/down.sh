#!/usr/bin/env bash
# test/cloud/down.sh [STATE_DIR] - stop the test cloud started by up.sh and remove STATE_DIR.
# Kills only the process groups recorded in STATE_DIR/pids (TERM, then KILL after 10 s), waits
# until they are gone, then removes STATE_DIR (only if it carries up.sh's marker file).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
. "$HERE/lib.sh"
SD=$(ptc_state_dir "${1:-}")
T=$(ptc_now)
if [ ! -e "$SD" ]; then ptc_log "nothing to do: $SD does not exist"; exit 0; fi
ptc_teardown "$SD"
ptc_log "test cloud in $SD stopped and removed in $(ptc_since "$T") s"
