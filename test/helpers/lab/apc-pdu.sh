#!/bin/sh
# snmpd `pass` script: the emulated lab's APC switched PDU. Its outlet control column
# (PowerNet-MIB, .1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.<outlet>) switches the lab's boards through
# board-power.sh, and reads their power back from it (1 on, 2 off).
#   -g OID | -n OID | -s OID integer 1|2|3       (snmpd's pass protocol)
set -u
BASE=.1.3.6.1.4.1.318.1.1.12.3.3.1.1.4
LAB=${LAB_DIR:?LAB_DIR is not set}
POWER=$(dirname "$0")/board-power.sh
COUNT=$(ls -d "$LAB"/board* 2>/dev/null | wc -l)

reply() {
  if [ "$("$POWER" "$LAB" status "$1")" = on ]; then value=1; else value=2; fi
  printf '%s\ninteger\n%s\n' "$BASE.$1" "$value"
}
number() {
  case "$1" in "$BASE".*) n=${1#"$BASE".} ;; *) return 1 ;; esac
  case "$n" in '' | *[!0-9]* | 0*) return 1 ;; esac
  [ "$n" -le "$COUNT" ] && echo "$n"
}

case "${1:-}" in
  -g) n=$(number "$2") && reply "$n" ;;
  -n)
    case "$2" in "$BASE".*) next=$(( ${2#"$BASE".} + 1 )) ;; *) next=1 ;; esac
    [ "$next" -le "$COUNT" ] && reply "$next"
    ;;
  -s)
    n=$(number "$2") || { echo not-writable; exit 0; }
    case "$4" in
      1) "$POWER" "$LAB" on "$n" ;;
      2) "$POWER" "$LAB" off "$n" ;;
      3) "$POWER" "$LAB" off "$n"; "$POWER" "$LAB" on "$n" ;;
      *) echo wrong-value ;;
    esac
    ;;
esac
exit 0
