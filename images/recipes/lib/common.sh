# shellcheck shell=bash disable=SC2034  # (SC2034: the recipes that source this use its variables)
# Shared by x86-initramfs.sh, x86-disk.sh, arm64-initramfs.sh and armv7-initramfs.sh (sourced, not
# run), and by build-test-images.sh for package_state.
#
# Everything that goes into an image comes from Debian packages fetched with `apt-get download` and
# unpacked with `dpkg-deb`; nothing from the build host's own filesystem ends up in an image. The host
# only needs the tools in packages.txt and working apt sources (run `apt-get update` first).
#
# Architectures: amd64 by default; a recipe calls `set_arch arm64` (or armhf) before recipe_init for
# an ARM image. Packages of an architecture other than the host's come through a private apt state (see
# apt_setup): the host's dpkg architecture list and its /var/lib/apt are never changed.
#
# Environment:
#   PADDOCK_DEB_CACHE        keep downloaded .debs here (checked against apt's SHA256) instead of a temp dir
#   PADDOCK_KERNEL_PACKAGE   use this linux-image package instead of what linux-image-amd64 depends on
#   PADDOCK_KERNEL_PACKAGE_ARM64   the same for arm64 (instead of what linux-image-arm64 depends on)
#   PADDOCK_KERNEL_PACKAGE_ARMHF   the same for armhf (instead of what linux-image-armmp-lpae depends on)
#   PADDOCK_APT_STATE        where the private apt states of foreign architectures go, one apt-ARCH dir
#                            each (package lists, ~20 MB each); default PADDOCK_DEB_CACHE, or the temp
#                            work dir without PADDOCK_DEB_CACHE
#   TMPDIR                   where the temporary work dir goes (~30 MB, ~70 MB for arm64)

EXTRA_TOOLS=()   # more host tools a recipe needs (set before recipe_init)
RECIPES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
GUEST_DIR=$RECIPES_DIR/guest

# dropbear-bin is dynamically linked; these packages hold the libraries it needs (checked at build
# time by following the ELF NEEDED entries, so a new dependency fails the build with a clear message).
DROPBEAR_LIB_PACKAGES=(libc6 libcrypt1 zlib1g libtomcrypt1 libtommath1 libgmp10)

# set_arch amd64|arm64|armhf: the Debian architecture of the image. Sets DEB_ARCH, TRIPLET (the
# multiarch library dir), CONSOLE, KERNEL_META (the linux-image metapackage), APT_OMIT_SUITES,
# BASE_CMDLINE and KERNEL_MEMBERS.
set_arch() {
  local karch fw_cfg='./*lib/modules/*/kernel/drivers/firmware/qemu_fw_cfg.ko*'
  DEB_ARCH=$1
  KERNEL_META=linux-image-$1
  # suites left out of a foreign architecture's private apt state (an extended regex a whole suite
  # name must match; see write_sources)
  APT_OMIT_SUITES=
  case $1 in
    amd64) TRIPLET=x86_64-linux-gnu; karch=x86; CONSOLE=ttyS0 ;;       # the PC's first UART (8250)
    arm64) TRIPLET=aarch64-linux-gnu; karch=arm64; CONSOLE=ttyAMA0 ;;  # QEMU virt's PL011 UART
    armhf)
      TRIPLET=arm-linux-gnueabihf; karch=arm; CONSOLE=ttyAMA0
      # armmp-lpae: the armmp kernel with LPAE, for Cortex-A7/A15-class cores (QEMU virt, cortex-a15)
      KERNEL_META=linux-image-armmp-lpae
      # its kernel has no qemu_fw_cfg (CONFIG_FW_CFG_SYSFS is off): the key comes from the command line
      fw_cfg=
      # bookworm-security's armhf index on the mirror does not match its InRelease ("File has
      # unexpected size (334084 != 349884). Mirror sync in progress?", the same at 05:00 and 13:22 on
      # 2026-11-23): apt-get update then fails every time and keeps no armhf security lists anyway.
      # A test image needs no security updates.
      APT_OMIT_SUITES='.*-security'
      ;;
    *) die "unsupported architecture $1 (amd64, arm64 or armhf)" ;;
  esac
  # Kernel command line shared by the images. console=: markers and the shell on the first serial
  # port; panic=-1: reboot at once on a panic, which ends QEMU when it runs with -no-reboot; quiet:
  # warnings only. The rest skips work that only tests the kernel itself and costs ~0.5 s under TCG:
  # cryptomgr.notests skips the crypto self-tests, and the KDF self-test (the only thing
  # crypto_kdf108_init does in 6.1) is not covered by it, so that initcall is skipped by name.
  BASE_CMDLINE="console=$CONSOLE panic=-1 quiet cryptomgr.notests initcall_blacklist=crypto_kdf108_init"
  # Only these parts of the kernel package (70 MB amd64, 60 MB arm64, 43 MB armhf) are unpacked (tar
  # patterns, matched against ./lib/modules and ./usr/lib/modules alike). Module dependencies are
  # resolved by depmod/modprobe on this subset and then re-checked against each module's own
  # "depends" list, so a module that falls outside these patterns stops the build instead of going
  # missing at boot.
  KERNEL_MEMBERS=(
    './boot/vmlinuz-*' './boot/config-*'
    './*lib/modules/*/modules.order' './*lib/modules/*/modules.builtin' './*lib/modules/*/modules.builtin.modinfo'
    './*lib/modules/*/kernel/drivers/virtio'
    './*lib/modules/*/kernel/drivers/net/virtio_net.ko*' './*lib/modules/*/kernel/drivers/net/net_failover.ko*'
    './*lib/modules/*/kernel/net/core'
    './*lib/modules/*/kernel/drivers/block/virtio_blk.ko*'
    ${fw_cfg:+"$fw_cfg"}
    './*lib/modules/*/kernel/drivers/char/hw_random'
    './*lib/modules/*/kernel/fs/ext4' './*lib/modules/*/kernel/fs/jbd2' './*lib/modules/*/kernel/fs/mbcache.ko*'
    './*lib/modules/*/kernel/lib' './*lib/modules/*/kernel/crypto' "./*lib/modules/*/kernel/arch/$karch/crypto"
  )
}
set_arch amd64

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() { log "error: $*"; exit 1; }
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="${2:-$(now)}" 'BEGIN { printf "%.1f", b - a }'; }   # secs T0 [T1]

# recipe_init OUTDIR: checks the host tools, creates OUTDIR and a temporary WORK dir (removed on exit).
recipe_init() {
  if [ $# -ne 1 ] || [ -z "$1" ]; then echo "usage: $PROG OUTDIR" >&2; exit 2; fi
  local missing=() t
  for t in apt-get apt-cache dpkg-deb tar xz readelf depmod modprobe modinfo cpio gzip sha256sum od \
           "${EXTRA_TOOLS[@]}"; do
    command -v "$t" >/dev/null 2>&1 || missing+=("$t")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing tools: ${missing[*]} (install the packages in $RECIPES_DIR/packages.txt)"
  mkdir -p "$1"
  OUTDIR=$(cd "$1" && pwd)
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/paddock-recipe.XXXXXX")
  trap 'rm -rf "$WORK"' EXIT
  DEBS=${PADDOCK_DEB_CACHE:-$WORK/debs}
  mkdir -p "$DEBS" "$WORK/x"
  X=$WORK/x   # unpacked packages
  apt_setup
}

# apt_setup: sets APT_OPTS, the options of every apt-get/apt-cache call. Empty for the host's own
# architecture. For another one (arm64 on an amd64 host) apt runs with a private state in APT_STATE:
# the host's sources and apt.conf (so its mirror and proxy), but APT::Architecture=ARCH and its own
# package lists, status and cache. That needs no `dpkg --add-architecture` + `apt-get update`, which
# would need root, change the host for good, and make the host's own `apt-get update` fail whenever
# the mirror has one inconsistent index of the added architecture. The private lists are downloaded
# when missing and refreshed when the host's are newer, so an `apt-get update` on the host moves
# every architecture forward, as it does for the amd64 images (~10 MB, 1-3 s).
# With APT_OMIT_SUITES (armhf: bookworm-security) the private state reads filtered copies of the
# host's sources instead (APT_STATE/sources/: the same entries, minus those suites; see
# write_sources).
APT_OPTS=()
apt_setup() {
  APT_OPTS=()
  [ "$DEB_ARCH" != "$(dpkg --print-architecture)" ] || return 0
  APT_STATE=${PADDOCK_APT_STATE:-${PADDOCK_DEB_CACHE:-$WORK}}/apt-$DEB_ARCH
  mkdir -p "$APT_STATE/lists/partial" "$APT_STATE/cache/archives/partial"
  [ -e "$APT_STATE/status" ] || : > "$APT_STATE/status"
  APT_OPTS=(-o "APT::Architecture=$DEB_ARCH" -o "APT::Architectures::=$DEB_ARCH"
            -o "Dir::State::Lists=$APT_STATE/lists" -o "Dir::State::status=$APT_STATE/status"
            -o "Dir::Cache=$APT_STATE/cache" -o "Acquire::Languages=none")
  [ -z "$APT_OMIT_SUITES" ] ||
    APT_OPTS+=(-o "Dir::Etc::SourceList=$APT_STATE/sources/none.list"
               -o "Dir::Etc::SourceParts=$APT_STATE/sources")
  local sandbox=()
  [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)  # root-owned dirs are not writable for _apt
  (
    flock 8
    [ -z "$APT_OMIT_SUITES" ] || write_sources "$APT_STATE/sources"
    foreign_lists_stale || exit 0
    log "updating the $DEB_ARCH package lists (private apt state in $APT_STATE)"
    rc=0
    apt-get "${APT_OPTS[@]}" "${sandbox[@]}" -qq update >&2 || rc=$?
    touch "$APT_STATE/updated"
    [ "$rc" -eq 0 ] && exit 0
    compgen -G "$APT_STATE/lists/*_Packages*" > /dev/null ||
      die "apt-get update for $DEB_ARCH failed and there are no $DEB_ARCH package lists"
    log "warning: apt-get update for $DEB_ARCH failed (exit $rc); using the lists it has"
  ) 8> "$APT_STATE/lock" || exit 1
}

# write_sources DIR: the host's apt sources without the suites APT_OMIT_SUITES matches (an extended
# regex for the whole suite name), as DIR/host.list (one-line entries: sources.list and
# sources.list.d/*.list) and DIR/host.sources (deb822 stanzas: sources.list.d/*.sources). Everything
# else (mirror URIs, components, options, Signed-By) is kept, so the private state uses the host's
# mirror as it is.
write_sources() {
  local dir=$1 mainlist parts f
  eval "$(apt-config shell mainlist Dir::Etc::SourceList/f parts Dir::Etc::SourceParts/d)"
  mkdir -p "$dir"
  # (the regex goes through the environment: awk -v would interpret backslashes)
  export PADDOCK_OMIT_RE="^($APT_OMIT_SUITES)\$"
  # one-line format, "deb [options] URI SUITE COMPONENT...": drop the entries of an omitted suite
  { [ ! -f "$mainlist" ] || cat "$mainlist"
    for f in "${parts%/}"/*.list; do [ ! -f "$f" ] || cat "$f"; done
  } | awk '
    BEGIN { re = ENVIRON["PADDOCK_OMIT_RE"] }
    /^[ \t]*deb(-src)?[ \t]/ {
      line = $0; sub(/#.*/, "", line); gsub(/\[[^]]*\]/, " ", line)
      n = split(line, w, /[ \t]+/); k = 0
      for (i = 1; i <= n; i++) if (w[i] != "" && ++k == 3 && w[i] ~ re) next
    }
    { print }' > "$dir/host.list.tmp"
  # deb822: drop the omitted suites from each stanza's Suites: field, and a stanza left with none
  for f in "${parts%/}"/*.sources; do [ ! -f "$f" ] || { cat "$f"; echo; }; done |
    awk '
      BEGIN { RS = ""; FS = "\n"; re = ENVIRON["PADDOCK_OMIT_RE"] }
      {
        out = ""
        for (i = 1; i <= NF; i++) {
          line = $i
          if (tolower(line) ~ /^suites:/) {
            n = split(substr(line, 8), w, /[ \t]+/); kept = ""
            for (j = 1; j <= n; j++) if (w[j] != "" && w[j] !~ re) kept = kept " " w[j]
            if (kept == "") next
            line = "Suites:" kept
          }
          out = out line "\n"
        }
        printf "%s\n", out
      }' > "$dir/host.sources.tmp"
  mv "$dir/host.list.tmp" "$dir/host.list"
  mv "$dir/host.sources.tmp" "$dir/host.sources"
}

# foreign_lists_stale: true when the private lists are missing, or older than the host's: a suite's
# (In)Release in the host's lists has a later Date: than ours, or is one we have none of and the
# host got it after our last update.
foreign_lists_stale() {
  local hostlists f ours
  compgen -G "$APT_STATE/lists/*_Packages*" > /dev/null || return 0
  eval "$(apt-config shell hostlists Dir::State::Lists/d)"
  for f in "${hostlists%/}"/*_Release "${hostlists%/}"/*_InRelease; do
    [ -f "$f" ] || continue
    ours=$APT_STATE/lists/${f##*/}
    if [ -f "$ours" ]; then
      [ "$(release_date "$f")" -le "$(release_date "$ours")" ] || return 0
    elif [ ! -e "$APT_STATE/updated" ] || [ "$f" -nt "$APT_STATE/updated" ]; then
      return 0
    fi
  done
  return 1
}
release_date() {   # release_date FILE: the Date: field of a Release file, as epoch seconds (0 if none)
  local d
  d=$(sed -n 's/^Date: //p' "$1" | head -n 1)
  if [ -n "$d" ]; then date -d "$d" +%s 2>/dev/null || echo 0; else echo 0; fi
}

# kernel_override: PADDOCK_KERNEL_PACKAGE (amd64), PADDOCK_KERNEL_PACKAGE_ARM64 or
# PADDOCK_KERNEL_PACKAGE_ARMHF, if set
kernel_override() {
  case $DEB_ARCH in
    amd64) echo "${PADDOCK_KERNEL_PACKAGE:-}" ;;
    arm64) echo "${PADDOCK_KERNEL_PACKAGE_ARM64:-}" ;;
    *) echo "${PADDOCK_KERNEL_PACKAGE_ARMHF:-}" ;;
  esac
}

kernel_package() {
  local override
  override=$(kernel_override)
  if [ -n "$override" ]; then echo "$override"; return; fi
  # linux-image-ARCH (armhf: linux-image-armmp-lpae) is a metapackage; the real one carries the ABI
  # (linux-image-6.1.0-NN-ARCH) and changes with Debian's updates, so never pin it.
  local p
  p=$(apt-cache "${APT_OPTS[@]}" depends --important "$KERNEL_META" 2>/dev/null |
      sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  [ -n "$p" ] || die "cannot resolve $KERNEL_META (run apt-get update?)"
  echo "$p"
}

# package_state: what a recipe for DEB_ARCH would use now, one "PACKAGE VERSION" line each (the kernel
# package KERNEL_META resolves to, and the candidate versions), for build-test-images.sh's
# stamps. Call apt_setup first.
package_state() {
  local kernel
  kernel=$(kernel_override)
  [ -n "$kernel" ] ||
    kernel=$(apt-cache "${APT_OPTS[@]}" depends --important "$KERNEL_META" 2>/dev/null |
             sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -n 1)
  echo "arch=$DEB_ARCH kernel=$kernel"
  apt-cache "${APT_OPTS[@]}" policy "$kernel" busybox-static dropbear-bin \
      "${DROPBEAR_LIB_PACKAGES[@]}" 2>/dev/null |
    awk '/^[^ ]/ { p = $1 } /^  Candidate:/ { print p, $2 }'
}

# fetch_debs PKG...: makes sure $DEBS holds the candidate .deb of every PKG, verified against the SHA256
# apt knows; sets FETCHED[PKG]=path. Cached files that match are reused (and touched, so a cache can be
# pruned by age); anything else is downloaded.
declare -A FETCHED=()
fetch_debs() {
  local uris file size hash pkg want need=() sandbox=()
  [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)  # root-owned dirs are not writable for _apt
  mkdir -p "$WORK/empty"
  # --print-uris from an empty dir: apt leaves out packages whose file is already in the current dir
  uris=$(cd "$WORK/empty" && apt-get "${APT_OPTS[@]}" download --print-uris "${@/%/:$DEB_ARCH}") ||
    die "apt-get download --print-uris $* failed (run apt-get update?)"
  while read -r _ file size hash; do   # 'URL' FILE SIZE SHA256:...
    [ -n "$file" ] || continue
    pkg=${file%%_*}
    FETCHED[$pkg]=$DEBS/$file
    want=""
    case $hash in SHA256:*) want=${hash#SHA256:} ;; esac
    printf '%s %s %s\n' "$file" "$size" "$want" >> "$WORK/debs.expected"
    if [ -f "$DEBS/$file" ] && [ "$(stat -c %s "$DEBS/$file")" = "$size" ] &&
       { [ -z "$want" ] || [ "$(sha256sum < "$DEBS/$file" | cut -d' ' -f1)" = "$want" ]; }; then
      touch "$DEBS/$file"
    else
      rm -f "$DEBS/$file"
      need+=("$pkg:$DEB_ARCH")
    fi
  done <<< "${uris//\'/}"
  for pkg in "$@"; do [ -n "${FETCHED[$pkg]:-}" ] || die "apt has no candidate for $pkg"; done
  if [ ${#need[@]} -gt 0 ]; then
    log "downloading ${need[*]}"
    (cd "$DEBS" && apt-get "${APT_OPTS[@]}" "${sandbox[@]}" download -q=2 "${need[@]}") >&2 || die "apt-get download ${need[*]} failed"
    while read -r file size want; do
      [ -f "$DEBS/$file" ] || die "apt-get download did not produce $file"
      [ -z "$want" ] || [ "$(sha256sum < "$DEBS/$file" | cut -d' ' -f1)" = "$want" ] || die "checksum mismatch: $file"
      touch "$DEBS/$file"   # apt gives it the server's date; the cache is pruned by use
    done < "$WORK/debs.expected"
  fi
  : > "$WORK/debs.expected"
}

# fetch_packages: downloads (or finds in $DEBS) the kernel and userland packages in one apt call
# (apt is slow to start where its binary cache is disabled, as in Debian's Docker images); sets KERNEL_PKG.
fetch_packages() {
  KERNEL_PKG=$(kernel_package)
  fetch_debs "$KERNEL_PKG" busybox-static dropbear-bin "${DROPBEAR_LIB_PACKAGES[@]}"
}

# unpack_kernel: unpacks the needed parts of the kernel package into $X; sets KREL and KMODDIR.
unpack_kernel() {
  dpkg-deb --fsys-tarfile "${FETCHED[$KERNEL_PKG]}" |
    { tar -x -C "$X" --wildcards "${KERNEL_MEMBERS[@]}"; cat > /dev/null; } ||
    die "unpacking ${FETCHED[$KERNEL_PKG]} failed (did the kernel package layout change? see KERNEL_MEMBERS)"
  local v
  v=$(cd "$X/boot" && echo vmlinuz-*)
  KREL=${v#vmlinuz-}
  [ -f "$X/boot/vmlinuz-$KREL" ] || die "no single boot/vmlinuz-* in $KERNEL_PKG"
  KMODDIR=lib/modules/$KREL
  [ -d "$X/$KMODDIR" ] || KMODDIR=usr/lib/modules/$KREL
  [ -d "$X/$KMODDIR" ] || die "no modules for $KREL in $KERNEL_PKG"
  if [ "$KMODDIR" = "usr/lib/modules/$KREL" ] && [ ! -e "$X/lib" ]; then ln -s usr/lib "$X/lib"; fi
  depmod -b "$X" "$KREL" 2>/dev/null || die "depmod failed for $KREL"
  KPKG_VERSION=$(dpkg-deb -f "${FETCHED[$KERNEL_PKG]}" Version)
}

# extract_vmlinux DEST: the uncompressed ELF kernel from $X/boot/vmlinuz-$KREL. QEMU boots it through
# the PVH entry point (Debian builds with CONFIG_PVH=y), which skips the real-mode setup and the
# in-guest decompression: about 2.5 s less per boot under TCG.
extract_vmlinux() {
  local img=$X/boot/vmlinuz-$KREL dest=$1 off magic cmd shoff shentsize shnum end
  grep -qx 'CONFIG_PVH=y' "$X/boot/config-$KREL" ||
    die "$KREL is built without CONFIG_PVH: QEMU cannot boot its vmlinux with -kernel"
  # like the kernel's scripts/extract-vmlinux: try every compressed-stream magic in the bzImage
  for magic in '\xfd7zXZ\x00' '\x28\xb5\x2f\xfd' '\x1f\x8b\x08'; do
    case $magic in
      '\xfd7zXZ\x00') cmd=(xz -dcq --single-stream) ;;
      '\x28\xb5\x2f\xfd') command -v zstd >/dev/null || continue; cmd=(zstd -dcq) ;;
      *) cmd=(gzip -dcq) ;;
    esac
    while IFS=: read -r off _; do
      tail -c "+$((off + 1))" "$img" | "${cmd[@]}" > "$dest.tmp" 2>/dev/null || true
      [ "$(od -An -c -N4 "$dest.tmp" | tr -d ' ')" = '177ELF' ] && break 2
    done < <(LC_ALL=C grep -aboP "$magic" "$img" || true)
  done
  if [ ! -s "$dest.tmp" ] || [ "$(od -An -c -N4 "$dest.tmp" | tr -d ' ')" != '177ELF' ]; then
    die "could not find an ELF kernel inside $img"
  fi
  # the decompressed payload is vmlinux followed by its relocation table; cut at the end of the ELF
  # (its section headers come last in the stripped image)
  shoff=$(od -An -tu8 -j40 -N8 "$dest.tmp" | tr -d ' ')
  shentsize=$(od -An -tu2 -j58 -N2 "$dest.tmp" | tr -d ' ')
  shnum=$(od -An -tu2 -j60 -N2 "$dest.tmp" | tr -d ' ')
  end=$((shoff + shentsize * shnum))
  if [ "$end" -le 0 ] || [ "$end" -gt "$(stat -c %s "$dest.tmp")" ]; then die "unexpected ELF layout in $img"; fi
  head -c "$end" "$dest.tmp" > "$dest"
  rm -f "$dest.tmp"
}

# module_list MODULE...: prints the .ko paths (relative to $X) needed to load MODULE..., dependencies
# first, each once, as modprobe (from kmod, on the depmod'ed subset) orders them.
module_list() {
  local m line path name dep seen=" "
  for m in "$@"; do
    modprobe -d "$X" -S "$KREL" --show-depends "$m" > "$WORK/deps" 2>&1 ||
      die "modprobe cannot resolve $m for $KREL: $(cat "$WORK/deps")"
    while read -r line; do
      case $line in
        insmod\ *) path=${line#insmod }; path=${path%% *}; path=${path#"$X"/} ;;
        builtin\ *) continue ;;
        *) die "unexpected modprobe output: $line" ;;
      esac
      case $seen in *" $path "*) continue ;; esac
      # every hard dependency the module itself declares must already be in the list (or built in)
      for dep in $(modinfo -F depends "$X/$path" | tr ',' ' '); do
        name=$dep
        case $seen in *"/$name.ko"*|*"/${name//_/-}.ko"*) continue ;; esac
        grep -q "/$name.ko" "$X/$KMODDIR/modules.builtin" 2>/dev/null && continue
        die "$path needs $dep, which is not unpacked (add it to KERNEL_MEMBERS)"
      done
      seen="$seen$path "
      echo "$path"
    done < "$WORK/deps"
  done
}

# install_modules ROOT MODULE...: copies MODULE... and their dependencies into ROOT/usr/lib/modules and
# lists them in load order in ROOT/etc/paddock/modules as "sysfs-name /lib/modules/...ko" lines, for
# the guest's init (busybox insmod; no modprobe or modules.dep needed in the guest).
install_modules() {
  local root=$1 p rel name
  shift
  : > "$root/etc/paddock/modules"
  for p in $(module_list "$@"); do
    rel=${p#*/modules/"$KREL"/}
    name=${rel##*/}; name=${name%%.ko*}
    mkdir -p "$root/usr/lib/modules/$KREL/$(dirname "$rel")"
    cp "$X/$p" "$root/usr/lib/modules/$KREL/$rel"
    echo "${name//-/_} /lib/modules/$KREL/$rel" >> "$root/etc/paddock/modules"
  done
}

# unpack_userland: busybox-static, dropbear-bin and dropbear's libraries into $X.
unpack_userland() {
  local p
  for p in busybox-static dropbear-bin "${DROPBEAR_LIB_PACKAGES[@]}"; do
    dpkg-deb -x "${FETCHED[$p]}" "$X"
  done
}

# busybox_applets BINARY: the applet names of a busybox binary, one per line. A binary of the host's
# architecture says so itself (--list). A foreign one cannot run here, so its applet name table is
# read instead: NUL-separated names in sorted order, starting with "[" and "[[", ended by an empty
# name (the same table --list prints). Either way the applets init needs must be there.
busybox_applets() {
  local bin=$1 off a list
  if [ "$DEB_ARCH" = "$(dpkg --print-architecture)" ]; then
    list=$("$bin" --list) || die "$bin --list failed"
  else
    off=$(LC_ALL=C grep -aboP '\x00\[\x00\[\[\x00' "$bin" | head -n 1 | cut -d: -f1)
    [ -n "$off" ] || die "no applet name table in $bin"
    list=$(tail -c "+$((off + 2))" "$bin" | head -c 65536 | tr '\0' '\n' | awk 'NF == 0 { exit } { print }')
  fi
  for a in sh insmod ip udhcpc arping base64 setsid cttyhack mount hostname; do
    printf '%s\n' "$list" | grep -qx "$a" || die "busybox in busybox-static has no $a applet"
  done
  printf '%s\n' "$list"
}

# stage_rootfs ROOT MODULE...: the guest's root tree. Merged-/usr layout: everything in /usr/bin and
# /usr/lib, with /bin, /sbin, /usr/sbin and /lib as symlinks, so every usual path works.
stage_rootfs() {
  local root=$1 a lib f interp queue=() seen=" " p
  shift
  mkdir -p "$root"/{usr/bin,usr/lib/"$TRIPLET",etc/paddock,dev,proc,sys,run,tmp,root/.ssh,var,mnt}
  ln -s usr/bin "$root/bin"; ln -s usr/bin "$root/sbin"; ln -s bin "$root/usr/sbin"
  ln -s usr/lib "$root/lib"; ln -s /run "$root/var/run"; ln -s /tmp "$root/var/tmp"; mkdir -p "$root/var/log"
  chmod 1777 "$root/tmp"; chmod 700 "$root/root" "$root/root/.ssh"

  # busybox and its applets
  cp "$X/bin/busybox" "$root/usr/bin/busybox"
  for a in $(busybox_applets "$X/bin/busybox"); do
    [ "$a" = busybox ] || ln -s busybox "$root/usr/bin/$a"
  done

  # dropbear, plus the closure of its shared libraries (ELF NEEDED, resolved inside $X)
  cp "$X/usr/sbin/dropbear" "$X/usr/bin/dropbearkey" "$root/usr/bin/"
  interp=$(readelf -l "$X/usr/sbin/dropbear" | sed -n 's/.*Requesting program interpreter: \(.*\)]$/\1/p')
  [ -n "$interp" ] || die "dropbear has no ELF interpreter?"
  queue=("$(basename "$interp")")
  for f in "$root/usr/bin/dropbear" "$root/usr/bin/dropbearkey"; do
    while read -r lib; do queue+=("$lib"); done < <(readelf -d "$f" | sed -n 's/.*Shared library: \[\(.*\)\]$/\1/p')
  done
  while [ ${#queue[@]} -gt 0 ]; do
    lib=${queue[0]}; queue=("${queue[@]:1}")
    case $seen in *" $lib "*) continue ;; esac
    seen="$seen$lib "
    f=""
    for p in "$X/lib/$TRIPLET/$lib" "$X/usr/lib/$TRIPLET/$lib"; do [ -e "$p" ] && { f=$p; break; }; done
    [ -n "$f" ] || die "dropbear needs $lib, which is in none of: ${DROPBEAR_LIB_PACKAGES[*]} (add its package)"
    cp -L "$f" "$root/usr/lib/$TRIPLET/$lib"
    while read -r p; do queue+=("$p"); done < <(readelf -d "$f" | sed -n 's/.*Shared library: \[\(.*\)\]$/\1/p')
  done
  # the interpreter's absolute path (/lib64/ld-linux-x86-64.so.2) must exist too
  if [ ! -e "$root$interp" ]; then
    mkdir -p "$root$(dirname "$interp")"
    ln -s "/usr/lib/$TRIPLET/$(basename "$interp")" "$root$interp"
  fi

  install_modules "$root" "$@"

  # accounts: root only, no password (key login only; dropbear runs with -s)
  echo 'root:x:0:0:root:/root:/bin/sh' > "$root/etc/passwd"
  echo 'root:x:0:' > "$root/etc/group"
  echo 'root:*:1::::::' > "$root/etc/shadow"; chmod 600 "$root/etc/shadow"
  printf '/bin/sh\n/bin/ash\n' > "$root/etc/shells"
  printf 'export PATH=/usr/sbin:/usr/bin:/sbin:/bin\nexport PS1='\''\\h:\\w\\$ '\''\n' > "$root/etc/profile"
  echo paddock > "$root/etc/hostname"
  printf '127.0.0.1\tlocalhost\n' > "$root/etc/hosts"
  mkdir -p "$root/usr/share/udhcpc"
  install -m 755 "$GUEST_DIR/udhcpc.sh" "$root/usr/share/udhcpc/default.script"
  # paddock's init replaces busybox's init applet: /sbin/init (and /init in an initramfs)
  install -m 755 "$GUEST_DIR/init.sh" "$root/usr/bin/paddock-init"
  ln -sf paddock-init "$root/usr/bin/init"
  ln -s /run/resolv.conf "$root/etc/resolv.conf"
  write_image_info "$root/etc/paddock/image"
}

# write_image_info FILE: what the image is made of, for `cat /etc/paddock/image` in the guest.
write_image_info() {
  local p
  {
    echo "recipe=$PROG"
    echo "kernel=$KREL"
    echo "package=$KERNEL_PKG $KPKG_VERSION"
    for p in busybox-static dropbear-bin "${DROPBEAR_LIB_PACKAGES[@]}"; do
      echo "package=$p $(dpkg-deb -f "${FETCHED[$p]}" Version)"
    done
  } > "$1"
}

# build_root ARGS...: what every recipe does first. Reads its arguments (recipe_init), fetches and
# unpacks the kernel and userland packages, and stages the guest's root tree in ROOT=$WORK/root with
# the recipe's MODULES. T0 and T1 time the fetch+unpack, for the recipe's last log line.
build_root() {
  recipe_init "$@"
  T0=$(now)
  fetch_packages
  unpack_kernel
  unpack_userland
  T1=$(now)
  ROOT=$WORK/root
  stage_rootfs "$ROOT" "${MODULES[@]}"
}

# pack_initramfs: ROOT as an initramfs (/init is paddock-init) in OUTDIR/initrd.cpio.gz.
pack_initramfs() {
  ln -s usr/bin/paddock-init "$ROOT/init"
  pack_cpio "$ROOT" "$OUTDIR/initrd.cpio.gz"
}

# pack_cpio ROOT FILE: newc cpio, every file owned by root, gzip'ed.
pack_cpio() {
  (cd "$1" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet) | gzip -6 -n > "$2.tmp"
  mv "$2.tmp" "$2"
}

# pack_arm64_kernel: OUTDIR/Image.gz, the kernel package's arm64 Image (checked: "ARM\x64" at offset
# 56) gzipped (-6: -9 takes 3x as long for 0.2 % less)
pack_arm64_kernel() {
  [ "$(od -An -c -j56 -N4 "$X/boot/vmlinuz-$KREL" | tr -d ' ')" = 'ARMd' ] ||
    die "boot/vmlinuz-$KREL in $KERNEL_PKG is not an uncompressed arm64 Image"
  gzip -6 -n -c "$X/boot/vmlinuz-$KREL" > "$OUTDIR/Image.gz.tmp"
  mv "$OUTDIR/Image.gz.tmp" "$OUTDIR/Image.gz"
}

# pack_bundle DIR: DIR/bundle.tar, what Paddock stores as one image of format "bundle" (see
# images/bundle.ts): members kernel (DIR/vmlinux, DIR/Image.gz for arm64 or DIR/zImage for armhf),
# initrd, cmdline and, for a disk image, rootfs.qcow2. Plain tar: the kernel is already uncompressed
# (x86) or compressed (arm64, armhf), and the agent unpacks a bundle once per sha256.
pack_bundle() {
  local out=$1 members=(kernel initrd cmdline) kernel
  local stage=$out/.bundle
  if [ -f "$out/vmlinux" ]; then kernel=$out/vmlinux
  elif [ -f "$out/Image.gz" ]; then kernel=$out/Image.gz
  elif [ -f "$out/zImage" ]; then kernel=$out/zImage
  else die "pack_bundle: no vmlinux, Image.gz or zImage in $out"
  fi
  rm -rf "$stage"
  mkdir -p "$stage"
  ln "$kernel" "$stage/kernel"
  ln "$out/initrd.cpio.gz" "$stage/initrd"
  ln "$out/cmdline" "$stage/cmdline"
  if [ -f "$out/disk.qcow2" ]; then ln "$out/disk.qcow2" "$stage/rootfs.qcow2"; members+=(rootfs.qcow2); fi
  tar --create --file "$out/bundle.tar.tmp" --directory "$stage" --owner=0 --group=0 --numeric-owner "${members[@]}"
  mv "$out/bundle.tar.tmp" "$out/bundle.tar"
  rm -rf "$stage"
}
