#!/usr/bin/env bash
# Runs every check and test of Augur on a fresh machine: installs what they need first.
#   ./test.sh            everything
#   FUZZ_SECONDS=0 ./test.sh   skip the fuzzing smoke run
# Tests that need /dev/kvm, root or tracefs print "SKIPPED <test>: <reason>" where those are missing.
# As root on a Debian host, the last step builds the .deb, installs, runs and removes it.
set -euo pipefail
cd "$(dirname "$0")"

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
step() { printf '\n==> %s\n' "$*"; }

step "toolchain"
command -v cargo >/dev/null || { echo "cargo is not installed (https://rustup.rs)"; exit 1; }
cargo --version
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt

# The libvirt driver links the system libvirt; as root on Debian the test command installs it.
FEATURES=()
if ! pkg-config --exists libvirt 2>/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  step "system packages for the libvirt driver"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libvirt-dev pkg-config >/dev/null
fi
if pkg-config --exists libvirt 2>/dev/null; then
  FEATURES=(--features augurd/libvirt)
else
  echo "SKIPPED libvirt driver: libvirt-dev is not installed (apt-get install libvirt-dev pkg-config)"
fi

step "format"
cargo fmt --all -- --check

step "lints"
cargo clippy --workspace --all-targets --locked "${FEATURES[@]}" -- -D warnings

step "docs"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked --quiet "${FEATURES[@]}"

if [ "$FUZZ_SECONDS" != "0" ]; then
  step "fuzzing smoke run (${FUZZ_SECONDS}s per target)"
  if rustup toolchain list | grep -q '^nightly'; then
    cargo +nightly fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked
    cargo run --quiet --locked -p augur-wire --example fuzz_seeds -- fuzz/corpus
    for target in frame_decoder sample_payload shim_stream mesh_frame migration_stream; do
      (cd fuzz && cargo +nightly fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" 2>&1 | tail -n 2)
    done
  else
    echo "SKIPPED fuzzing: no nightly toolchain (rustup toolchain install nightly)"
  fi
fi

step "guests: static augur-shim, QEMU, libvirt, a Debian kernel and an initramfs"
# glibc linked statically (no musl target here): the guest's initramfs has no dynamic loader.
RUSTFLAGS="-C target-feature=+crt-static" cargo build --release --locked --quiet -p augur-shim \
  --target x86_64-unknown-linux-gnu
SHIM=target/x86_64-unknown-linux-gnu/release/augur-shim
strip -o target/augur-shim.stripped "$SHIM"
echo "augur-shim: $(stat -c %s target/augur-shim.stripped) bytes, static"
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  tests/guests/setup.sh target/augur-shim.stripped || echo "SKIPPED guests: tests/guests/setup.sh failed"
else
  echo "SKIPPED guests: setting them up needs root and apt"
fi

step "tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast "${FEATURES[@]}" -- --show-output 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

step "package install test"
set +e
packaging/install-test.sh
install_status=$?
set -e
[ "$install_status" = 0 ] || echo "install test: FAILED (exit $install_status)"

grep -h '^SKIPPED' "$log" | sort -u || true
passed=$(grep -h '^test result:' "$log" | grep -o '[0-9]* passed' | awk '{s+=$1} END {print s+0}')
failed=$(grep -h '^test result:' "$log" | grep -o '[0-9]* failed' | awk '{s+=$1} END {print s+0}')
echo
echo "$passed passed, $failed failed"
[ "$status" = 0 ] || exit "$status"
exit "$install_status"
