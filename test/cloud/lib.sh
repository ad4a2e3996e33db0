# shellcheck shell=bash
# Shared helpers for test/cloud/{up,down,smoke}.sh. Sourced, not executed.
#
# NB: never define/export a variable named LOGS (or NODENAME, MNESIA_BASE, ...):
# rabbitmq-env maps un-prefixed names to RABBITMQ_*. RabbitMQ is started with
# `env -i` anyway, but keep the names here prefixed.

PTC_STATE_DIR_DEFAULT=${PADDOCK_TEST_CLOUD:-/tmp/paddock-test-cloud}
# The OpenStack Python modules live in Debian's python only; `python3` on PATH may be pyenv's.
# shellcheck disable=SC2034  # used by the scripts that source this file
PTC_PY=/usr/bin/python3
PTC_MARKER=.paddock-test-cloud

ptc_now() { date +%s.%N; }
ptc_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }
ptc_log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# ptc_state_dir ARG : absolute state dir from $1 or the default
ptc_state_dir() {
  local d=${1:-$PTC_STATE_DIR_DEFAULT}
  case $d in /*) ;; *) d=$PWD/$d ;; esac
  printf '%s\n' "${d%/}"
}

# Start time (clock ticks since boot) of a pid, or empty.
ptc_starttime() { awk '{ sub(/^.*\) /, ""); print $20 }' "/proc/$1/stat" 2>/dev/null || true; }

# ptc_group_alive PIDFILE : is the process group recorded in PIDFILE (ours) still there?
# A pid file holds "PGID STARTTIME" of the group leader. While any member of group P exists the
# kernel cannot hand out P as a new pid, so: leader alive with the same start time => ours;
# leader gone but members with pgid P => ours (orphaned members); otherwise gone/recycled.
ptc_group_members() {
  local pg st cur
  read -r pg st < "$1" 2>/dev/null || return 0
  [ -n "${pg:-}" ] || return 0
  if [ -d "/proc/$pg" ]; then
    cur=$(ptc_starttime "$pg")
    if [ "$(awk '{ sub(/^.*\) /, ""); print $3 }' "/proc/$pg/stat" 2>/dev/null)" = "$pg" ] && [ "$cur" != "$st" ]; then
      return 0   # pid reused by an unrelated group leader: not ours
    fi
  fi
  # zombies (state Z) count as gone: PID 1 here reaps orphans only now and then
  ps -e -o pid=,pgid=,stat= | awk -v g="$pg" '$2 == g && $3 !~ /^Z/ { print $1 }'
}
ptc_group_alive() { [ -n "$(ptc_group_members "$1")" ]; }

# ptc_kill_groups STATE_DIR : stop every recorded group: the OpenStack services first (they exit in
# ~1 s while RabbitMQ is still there, but wait ~6 s for it if it is gone), then RabbitMQ and epmd.
# TERM, wait up to 5 s, KILL what is left, wait until everything is gone.
ptc_kill_groups() {
  local dir=$1/pids f rc=0 services=() broker=()
  [ -d "$dir" ] || return 0
  for f in "$dir"/*.pid; do
    [ -e "$f" ] || continue
    case $(basename "$f" .pid) in rabbitmq|epmd) broker+=("$f") ;; *) services+=("$f") ;; esac
  done
  [ ${#services[@]} = 0 ] || _ptc_kill_wave "${services[@]}" || rc=1
  [ ${#broker[@]} = 0 ] || _ptc_kill_wave "${broker[@]}" || rc=1
  return $rc
}

_ptc_signal() { # SIG PIDFILE...
  local sig=$1 f pg st; shift
  for f in "$@"; do
    if ptc_group_alive "$f"; then
      read -r pg st < "$f"
      [ "$sig" = KILL ] && ptc_log "  $(basename "$f" .pid): group $pg ignored TERM, sending KILL"
      kill "-$sig" -- "-$pg" 2>/dev/null || true
    fi
  done
}
_ptc_wait_gone() { # TENTHS PIDFILE...
  local n=$1 i f left; shift
  for ((i = 0; i < n; i++)); do
    left=0
    for f in "$@"; do ptc_group_alive "$f" && { left=1; break; }; done
    [ $left = 0 ] && return 0
    sleep 0.1
  done
  return 1
}
_ptc_kill_wave() {
  _ptc_signal TERM "$@"
  _ptc_wait_gone 50 "$@" && return 0
  _ptc_signal KILL "$@"
  _ptc_wait_gone 100 "$@" && return 0
  ptc_log "some process groups are still alive: $*"; return 1
}

# ptc_teardown STATE_DIR : kill recorded groups and remove the dir (only if it is ours).
ptc_teardown() {
  local sd=$1
  [ -e "$sd" ] || return 0
  if [ ! -e "$sd/$PTC_MARKER" ]; then
    if [ -d "$sd" ] && [ -z "$(ls -A "$sd")" ]; then rmdir "$sd"; return 0; fi
    ptc_log "refusing to remove $sd: no $PTC_MARKER marker (not a paddock test cloud dir)"
    return 1
  fi
  ptc_kill_groups "$sd"
  rm -rf -- "$sd"
}

# TCP port open on 127.0.0.1?
ptc_port_open() { (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
