#!/usr/bin/env bash
# Prepares real Linux guests for the tests, from Debian packages only, and prints the paths.
#
#   tests/guests/setup.sh SHIM_BINARY
#
# - QEMU (qemu-system-x86 from bookworm-backports, whose version matches the qemu-utils these hosts
#   carry; bookworm's own would make apt remove it) and libvirt (daemon, QEMU driver, clients), through
#   a private apt configuration built from the machine's own mirror: /etc/apt is not changed.
# - A Debian kernel, unpacked (never installed); its uncompressed ELF is cut out of the bzImage so QEMU
#   boots it directly (PVH), without firmware or in-guest decompression.
# - busybox-static, and an initramfs holding SHIM_BINARY (a static build of augur-shim) and the guest
#   init (guest-init.sh).
# Idempotent. Everything lands under $AUGUR_GUEST_LAB (default /var/tmp/augur-guest-lab).
set -euo pipefail
SHIM=$(realpath "${1:?usage: setup.sh SHIM_BINARY}")
HERE=$(cd "$(dirname "$0")" && pwd)
LAB=${AUGUR_GUEST_LAB:-/var/tmp/augur-guest-lab}
export DEBIAN_FRONTEND=noninteractive
mkdir -p "$LAB"/{kernel,busybox,run,apt/lists/partial,apt/archives/partial}
cd "$LAB"

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v libvirtd >/dev/null || ! command -v virsh >/dev/null; then
  apt-get update -qq
  SRC=/etc/apt/sources.list.d/debian.sources
  if [ -f "$SRC" ]; then
    URI=$(awk '/^URIs:/{print $2; exit}' "$SRC")
    KEY=$(awk '/^Signed-By:/{print $2; exit}' "$SRC")
  else
    URI=http://deb.debian.org/debian; KEY=/usr/share/keyrings/debian-archive-keyring.gpg
  fi
  printf 'deb [signed-by=%s] %s bookworm main\ndeb [signed-by=%s] %s bookworm-backports main\n' \
    "$KEY" "$URI" "$KEY" "$URI" > apt/sources.list
  APT=(-o Dir::Etc::sourcelist="$LAB/apt/sources.list" -o Dir::Etc::sourceparts=-
       -o Dir::State::lists="$LAB/apt/lists" -o Dir::Cache::archives="$LAB/apt/archives"
       -o APT::Sandbox::User=root)
  apt-get "${APT[@]}" update -qq
  apt-get "${APT[@]}" install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
  apt-get install -y -qq --no-install-recommends libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients >/dev/null
fi

if [ ! -s vmlinux ]; then
  (cd kernel
   PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
   ls "${PKG}"_*.deb >/dev/null 2>&1 || apt-get download -q "$PKG" 2>&1 | grep -v unsandboxed || true
   rm -rf root && dpkg -x "${PKG}"_*.deb root)
  # The payload is the first xz stream inside the bzImage.
  OFFSET=$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' kernel/root/boot/vmlinuz-* | head -1 | cut -d: -f1)
  tail -c +$((OFFSET + 1)) kernel/root/boot/vmlinuz-* | xz -dc --single-stream > vmlinux.tmp 2>/dev/null || true
  [ -s vmlinux.tmp ] && mv vmlinux.tmp vmlinux
  [ -s vmlinux ] || { echo "could not extract the kernel ELF" >&2; exit 1; }
fi

if [ ! -x busybox/root/bin/busybox ]; then
  (cd busybox && { apt-get download -q busybox-static 2>&1 | grep -v unsandboxed || true; } && dpkg -x busybox-static_*.deb root)
fi

# The initramfs is rebuilt when the shim or the init changed.
STAMP=$(cat "$SHIM" "$HERE/guest-init.sh" "$HERE/build-initramfs.sh" | sha256sum | cut -c1-16)
if [ "$(cat initramfs.stamp 2>/dev/null)" != "$STAMP" ] || [ ! -s initramfs.cpio.gz ]; then
  "$HERE/build-initramfs.sh" "$LAB/initramfs.cpio.gz" "$SHIM"
  echo "$STAMP" > initramfs.stamp
fi
echo "KERNEL=$LAB/vmlinux"
echo "INITRD=$LAB/initramfs.cpio.gz"
