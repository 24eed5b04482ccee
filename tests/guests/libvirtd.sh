#!/usr/bin/env bash
# libvirtd.sh N [stop]: a private libvirtd #N (system mode, as root) in its own mount and UTS
# namespace, so tests can run two "hosts" on one machine. Only libvirt's own directories are
# replaced; its state lives in $AUGUR_GUEST_LAB/lv/N. Client URI:
#   qemu+unix:///system?socket=$AUGUR_GUEST_LAB/lv/N/run/libvirt-sock
set -euo pipefail
N=$1; ACTION=${2:-start}
LAB=${AUGUR_GUEST_LAB:-/var/tmp/augur-guest-lab}
B=$LAB/lv/$N
if [ "$ACTION" = stop ]; then
  if [ -f "$B/daemon.pid" ]; then
    P=$(cat "$B/daemon.pid"); kill "$P" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$P" 2>/dev/null || true
    rm -f "$B/daemon.pid"
  fi
  exit 0
fi
mkdir -p "$B"/{etc,run,lib,log,cache}
cat > "$B/etc/libvirtd.conf" <<CONF
host_uuid = "00000000-0000-4000-8000-00000000000$N"
unix_sock_rw_perms = "0770"
auth_unix_rw = "none"
auth_unix_ro = "none"
log_outputs = "2:file:/var/log/libvirt/libvirtd.log"
CONF
cat > "$B/etc/qemu.conf" <<CONF
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
migration_port_min = $((49152 + 100 * N))
migration_port_max = $((49152 + 100 * N + 63))
CONF
# libvirt 9.0 looks up its compiled-in 'libvirt-qemu' user before reading qemu.conf; without the
# libvirt-daemon-system package that user does not exist, so the namespace gets its own passwd.
cp /etc/passwd "$B/passwd"; cp /etc/group "$B/group"
grep -q '^libvirt-qemu:' "$B/passwd" || echo 'libvirt-qemu:x:64055:64055::/var/lib/libvirt:/usr/sbin/nologin' >> "$B/passwd"
grep -q '^libvirt-qemu:' "$B/group" || echo 'libvirt-qemu:x:64055:' >> "$B/group"
grep -q '^kvm:' "$B/group" || echo 'kvm:x:64056:' >> "$B/group"
: > "$B/log/libvirtd.log"
mkdir -p /etc/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
unshare --mount --uts --propagation private bash -c "
  set -e
  hostname lv$N
  mount --bind '$B/etc' /etc/libvirt
  mount --bind '$B/passwd' /etc/passwd
  mount --bind '$B/group' /etc/group
  mount -t tmpfs tmpfs /run
  mkdir -p /run/libvirt && mount --bind '$B/run' /run/libvirt
  mount --bind '$B/lib' /var/lib/libvirt
  mount --bind '$B/log' /var/log/libvirt
  mount --bind '$B/cache' /var/cache/libvirt
  exec libvirtd --pid-file /run/libvirt/libvirtd.pid
" > "$B/daemon.out" 2>&1 &
echo $! > "$B/daemon.pid"
for _ in $(seq 100); do [ -S "$B/run/libvirt-sock" ] && break; sleep 0.1; done
[ -S "$B/run/libvirt-sock" ] || { echo "libvirtd $N did not start:"; cat "$B/daemon.out"; tail -20 "$B/log/libvirtd.log"; exit 1; }
echo "qemu+unix:///system?socket=$B/run/libvirt-sock"
