// The POSIX shell the static provisioner runs on a host over its root admin login. Fixed text: the
// file, the tenant's name, the tag and the line pattern travel as positional arguments, the key
// line on stdin, so nothing from a request is ever interpolated into shell code.
//
// The tenant's authorized_keys file belongs to Paddock: it holds only lines Paddock wrote, in the
// one shape `expectedLinePattern` matches. The tenant can read it (sshd reads it as her) but never
// write it: the file and every folder above it must be root's and not writable by group or others
// (a sticky folder such as /tmp is allowed above the file: nobody may replace another's entry
// there). That is what OpenSSH's StrictModes asks, minus "owned by the user herself".

// $1 = the file, $2 = the tenant. Sets `uid`; `check PATH` appends to `unsafe` every step of PATH
// the tenant could change.
const prelude = `set -eu
fail() { printf '%s\\n' "$*" >&2; exit 3; }
[ "$(id -u)" = 0 ] || fail "the admin login is not root: it cannot keep the tenant's key file out of her reach nor end her processes"
f=$1
user=$2
uid=$(id -u -- "$user" 2>/dev/null) || fail "no user $user on this host"
[ "$uid" != 0 ] || fail "$user has uid 0: a reservation login must not be root"
unsafe=''
check() {
  p=$1
  while :; do
    if [ -L "$p" ]; then
      owner=$(stat -c %u -- "$p")
      [ "$owner" = 0 ] || unsafe="$unsafe $p(owner uid $owner)"
    elif [ -e "$p" ]; then
      set -- $(stat -c '%u %a' -- "$p")
      [ "$1" = 0 ] || unsafe="$unsafe $p(owner uid $1)"
      mode=$((0$2))
      if [ $((mode & 022)) != 0 ] && { [ ! -d "$p" ] || [ $((mode & 01000)) = 0 ]; }; then unsafe="$unsafe $p(mode $2)"; fi
    fi
    [ "$p" != / ] || break
    p=$(dirname -- "$p")
  done
}
checkBoth() { check "$f"; check "$(readlink -f -- "$f")"; }`;

// $1 = the file, $2 = the tenant; the key line on stdin. Creates the folder (0755) and the file
// (0644: sshd reads it as the tenant), refuses a path the tenant could change, adds the line once.
export const addScript = `${prelude}
line=$(cat)
dir=$(dirname -- "$f")
[ -d "$dir" ] || (umask 022; mkdir -p -- "$dir")
[ -e "$f" ] || (umask 022; : > "$f")
checkBoth
[ -z "$unsafe" ] || fail "$user could rewrite her own keys: unsafe owner or mode on$unsafe"
[ -f "$f" ] || fail "$f is not a regular file"
chmod 0644 -- "$f"
if ! grep -qxF -e "$line" -- "$f"; then
  if [ -s "$f" ] && [ -n "$(tail -c 1 -- "$f")" ]; then printf '\\n' >> "$f"; fi
  printf '%s\\n' "$line" >> "$f"
fi
grep -qxF -e "$line" -- "$f"`;

// $1 = the file, $2 = the tenant, $3 = the reservation's tag, $4 = the expected line pattern (ERE).
// Rewrites the file with only the expected lines of other reservations (atomic rename), then, if
// no other reservation's key is left, kills every process of the tenant (real or effective uid)
// until none is left: first all at once as the tenant (kill -1 cannot be outrun by forks), then
// by pid. Zombies are skipped: they run nothing and only their parent can reap them.
// Prints `mine= others= unexpected= killed=`, `unsafe=…`, then the unexpected lines.
export const releaseScript = `${prelude}
tag=$3
expected=$4
mine=0 others=0 unexpected=0 killed=0
if [ -f "$f" ]; then
  real=$(readlink -f -- "$f")
  mine=$({ grep -E -e "$expected" -- "$real" || true; } | awk -v tag="$tag" '$NF == tag' | wc -l)
  strange=$({ grep -Ev -e "$expected" -- "$real" || true; } | { grep -Ev '^[[:space:]]*(#.*)?$' || true; })
  [ -z "$strange" ] || unexpected=$(printf '%s\\n' "$strange" | wc -l)
  if [ "$mine" -gt 0 ] || [ "$unexpected" -gt 0 ]; then
    tmp=$(mktemp "$real.paddock.XXXXXX")
    trap 'rm -f -- "$tmp"' EXIT
    { grep -E -e "$expected" -- "$real" || true; } | awk -v tag="$tag" '$NF != tag' > "$tmp"
    chmod 0644 -- "$tmp"
    mv -f -- "$tmp" "$real"
    trap - EXIT
  fi
  others=$({ grep -E -e "$expected" -- "$real" || true; } | wc -l)
  checkBoth
fi
tenant() { ps -e -o uid= -o ruid= -o stat= -o pid= | awk -v uid="$uid" '($1 == uid || $2 == uid) && $3 !~ /^Z/ { print $4 }'; }
if [ "$others" -eq 0 ]; then
  pids=$(tenant)
  killed=$(printf '%s' "$pids" | wc -w)
  if [ -n "$pids" ] && command -v setpriv > /dev/null; then
    setpriv --reuid="$uid" --regid="$(id -g -- "$user")" --clear-groups kill -KILL -1 2> /dev/null || true
  fi
  rounds=0
  while pids=$(tenant); [ -n "$pids" ]; do
    rounds=$((rounds + 1))
    [ "$rounds" -le 100 ] || fail "processes of $user still run after 100 rounds of kill -KILL:" $pids
    kill -KILL $pids 2> /dev/null || true
    sleep 0.1
  done
fi
echo "mine=$mine others=$others unexpected=$unexpected killed=$killed"
echo "unsafe=$unsafe"
[ -z "\${strange:-}" ] || printf '%s\\n' "$strange" | head -n 5 | cut -c 1-200`;

// $1 = the file. Prints the tag of every Paddock line (one per line, possibly repeated).
export const listScript = `set -eu
f=$1
[ -f "$f" ] || exit 0
awk '$NF ~ /^paddock:/ { print $NF }' "$f"`;
