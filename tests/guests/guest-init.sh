#!/bin/sh
# PID 1 of the test guests. Kernel command line:
#   augur.workload=LIST   comma-separated: dirty (dd 64 MiB into tmpfs, over and over),
#                         cpu (a shell busy loop), net (a long-lived TCP stream to the host)
#   augur.netport=PORT    where the net workload connects (10.0.2.2:PORT, the host's loopback)
#   augur.hostile=1       also write random bytes into the shim's port, as a hostile guest would
#   augur.shim=0          do not start augur-shim
# A heartbeat line "HB n uptime" goes to the console every second, whatever the workload.
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mkdir -p /dev/virtio-ports /sys/kernel/tracing
mount -t tracefs nodev /sys/kernel/tracing 2>/dev/null
for m in $(cat /lib/modules/load.order); do insmod /lib/modules/$m 2>/dev/null; done
sleep 0.2
# No udev: name the virtio-serial ports ourselves.
for p in /sys/class/virtio-ports/vport*; do
  [ -r "$p/name" ] && ln -sf "/dev/$(basename "$p")" "/dev/virtio-ports/$(cat "$p/name")"
done
ip link set lo up
if ip link show eth0 >/dev/null 2>&1; then
  ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
fi
arg() { for w in $(cat /proc/cmdline); do case $w in "$1"=*) echo "${w#*=}"; return;; esac; done; }
echo "AUGUR_READY uptime=$(cut -d' ' -f1 /proc/uptime) ports=$(ls /dev/virtio-ports | tr '\n' ,)"
if [ "$(arg augur.shim)" != 0 ]; then
  /bin/augur-shim --interval-ms 1000 > /dev/console 2>&1 &
fi
for w in $(arg augur.workload | tr , ' '); do
  case $w in
    dirty) (while :; do dd if=/dev/urandom of=/tmp/dirty bs=1M count=64 2>/dev/null; done) & ;;
    cpu) (while :; do n=0; while [ $n -lt 100000 ]; do n=$((n+1)); done; done) & ;;
    net) (while :; do (while :; do echo "augur guest $(cut -d' ' -f1 /proc/uptime)"; sleep 0.5; done) | nc 10.0.2.2 "$(arg augur.netport)"; sleep 1; done) & ;;
  esac
done
if [ "$(arg augur.hostile)" = 1 ]; then
  (while :; do head -c 20000 /dev/urandom > /dev/virtio-ports/org.augur.shim 2>/dev/null; sleep 1; done) &
fi
i=0
while :; do echo "HB $i $(cut -d' ' -f1 /proc/uptime)"; i=$((i+1)); sleep 1; done
