#!/usr/bin/env bash
# build-initramfs.sh OUT SHIM_BINARY: a busybox initramfs for the unpacked Debian kernel, with the
# virtio modules it needs, augur-shim, and guest-init.sh as /init.
set -euo pipefail
OUT=$1; SHIM=$2
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${AUGUR_GUEST_LAB:-/var/tmp/augur-guest-lab}
BB=$LAB/busybox/root/bin/busybox
KROOT=$LAB/kernel/root
KVER=$(ls "$KROOT/lib/modules" | head -1)
MODS=$KROOT/lib/modules/$KVER
# The .deb ships no modules.dep (depmod runs on install).
[ -s "$MODS/modules.dep" ] || "$BB" depmod -b "$KROOT" "$KVER"

STAGE=$(mktemp -d "$LAB/stage.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE"/{bin,sbin,dev,proc,sys,tmp,mnt,run,etc,lib/modules}
cp "$BB" "$STAGE/bin/busybox"
for applet in $("$BB" --list); do [ "$applet" = busybox ] || ln -sf busybox "$STAGE/bin/$applet"; done
cp "$SHIM" "$STAGE/bin/augur-shim"
cp "$HERE/guest-init.sh" "$STAGE/init"
chmod +x "$STAGE/init" "$STAGE/bin/augur-shim"

# Modules in dependency order (post-order walk of modules.dep).
declare -A SEEN
ORDER=()
dep_path() { awk -F: -v m="/$1.ko" 'substr($1, length($1)-length(m)+1) == m {print $1; exit}' "$MODS/modules.dep"; }
walk() {
  [ -n "${SEEN[$1]:-}" ] && return 0
  SEEN[$1]=1
  local d
  for d in $(awk -F: -v p="$1" '$1 == p {print $2}' "$MODS/modules.dep"); do walk "$d"; done
  ORDER+=("$1")
}
for m in virtio_pci virtio_console virtio_net virtio_blk; do
  p=$(dep_path "$m"); [ -n "$p" ] || { echo "module $m not found" >&2; exit 1; }
  walk "$p"
done
for p in "${ORDER[@]}"; do
  cp "$MODS/$p" "$STAGE/lib/modules/"
  basename "$p" >> "$STAGE/lib/modules/load.order"
done
(cd "$STAGE" && find . | LC_ALL=C sort | "$BB" cpio -o -H newc -R 0:0 2>/dev/null | gzip -1) > "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "built $OUT ($(du -h "$OUT" | cut -f1), kernel $KVER, ${#ORDER[@]} modules)"
