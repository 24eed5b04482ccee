#!/usr/bin/env bash
# The package's round trip on this machine: build the .deb, install it, check what it put where,
# verify the systemd unit, start augurd the way the unit does and ask augurctl for its status,
# remove the package and show that the config and the data survive, then purge and show that
# they are gone. Needs root and dpkg; installs cargo-deb if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ] || ! command -v dpkg >/dev/null; then
  echo "SKIPPED install test: needs root and dpkg"
  exit 0
fi
if dpkg -s augur >/dev/null 2>&1; then
  echo "install test: the augur package is already installed here; not touching it" >&2
  exit 1
fi
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

# With libvirt-dev present the package carries the libvirt driver (and depends on libvirt0).
features=()
pkg-config --exists libvirt 2>/dev/null && features=(--features augurd/libvirt)
cargo build --release --locked --quiet -p augurd -p augurctl "${features[@]}"
mkdir -p target/release/packaging
# The guest shim: static glibc, so it runs in any x86-64 Linux guest; also kept beside the .deb
# as its own artifact.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet -p augur-shim \
  --target x86_64-unknown-linux-gnu
strip -o target/release/packaging/augur-shim target/x86_64-unknown-linux-gnu/release/augur-shim
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
cp target/release/packaging/augur-shim "target/augur-shim-$version-x86_64-linux"
echo "guest artifact: target/augur-shim-$version-x86_64-linux"
target/release/augurctl man | gzip -9n > target/release/packaging/augurctl.1.gz
target/release/augurctl completions bash > target/release/packaging/augurctl.bash
deb=$(cargo deb -p augurd --no-build | tail -n 1)
echo "built $deb"

pid=""
cleanup() {
  [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
  userdel augur-install-test-reader >/dev/null 2>&1 || true
  userdel augur-install-test-stranger >/dev/null 2>&1 || true
  dpkg -P augur >/dev/null 2>&1 || true
}
trap cleanup EXIT

dpkg -i "$deb"
for path in /usr/bin/augurd /usr/bin/augurctl /usr/lib/augur/guest/augur-shim; do test -x "$path"; done
file /usr/lib/augur/guest/augur-shim 2>/dev/null | grep -q 'static' || ! command -v file >/dev/null
test -f /etc/augur/augurd.toml
test -f /usr/share/man/man1/augurctl.1.gz
test -d /var/lib/augur
getent group augur >/dev/null
unit=$(dpkg -L augur | grep '/augurd\.service$')
echo "unit: $unit"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit"
  echo "systemd-analyze verify: ok"
fi
augurd --check-config --config /etc/augur/augurd.toml

# What the unit does: its runtime directory, then ExecStart.
install -d -m "$(sed -n 's/^RuntimeDirectoryMode=//p' "$unit")" /run/augur
read -r -a exec_start <<< "$(sed -n 's/^ExecStart=//p' "$unit")"
"${exec_start[@]}" 2>/tmp/augurd-install-test.log &
pid=$!
for _ in $(seq 100); do
  [ -S /run/augur/augurd.sock ] && break
  sleep 0.2
done
augurctl status
test "$(stat -c '%a %G' /run/augur/augurd.sock)" = "660 augur"
augurctl store stats >/dev/null
# An operator in the augur group reads without sudo; one outside it is refused.
useradd --no-create-home --groups augur augur-install-test-reader
useradd --no-create-home augur-install-test-stranger
runuser -u augur-install-test-reader -- augurctl status >/dev/null
echo "a member of the augur group: status ok"
if runuser -u augur-install-test-stranger -- augurctl status >/dev/null 2>&1; then
  echo "a user outside the augur group was answered"; exit 1
fi
echo "a user outside the augur group: refused"
userdel augur-install-test-reader
userdel augur-install-test-stranger
kill -TERM "$pid"
wait "$pid"
pid=""

dpkg -r augur
test ! -e /usr/bin/augurd
test -f /etc/augur/augurd.toml
test -d /var/lib/augur/store
echo "after remove: config and data kept"
dpkg -P augur
test ! -e /etc/augur/augurd.toml
test ! -e /var/lib/augur
echo "after purge: config and data gone"
echo "install test: ok"
