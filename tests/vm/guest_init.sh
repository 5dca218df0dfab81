#!/bin/busybox sh
# PID 1 of the tests/vm guest: mount, load the virtio-vsock modules in dependency order, serve.
# Services (socat over AF_VSOCK): 1024 echo, 1025 "20 MiB of zeros then close", 1026 facts about
# the guest, 1027 a shell (for measurements); and one connection out to the host's port 5000 (task.socket_5000 on the host).
/bin/busybox mkdir -p /proc /sys /dev /tmp /bin
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/order); do  # dependency order (kuasar.vmm.image.module_order)
    insmod /lib/modules/$m.ko || echo "KUASAR-VM: insmod $m failed"
done
echo "KUASAR-VM: modules loaded at $(cut -d' ' -f1 /proc/uptime)"
S=/usr/bin/socat
# 64 KiB buffers: socat's default 8 KiB and busybox head make the guest, not vsock, the bottleneck.
# The echo goes through cat: socat's own PIPE deadlocks on itself with 64 KiB writes.
$S -b 65536 VSOCK-LISTEN:1024,reuseaddr,fork,backlog=128 EXEC:/bin/cat &
$S -b 65536 VSOCK-LISTEN:1025,reuseaddr,fork,backlog=128 SYSTEM:'dd if=/dev/zero bs=65536 count=320 2>/dev/null' &
$S VSOCK-LISTEN:1026,reuseaddr,fork SYSTEM:'uname -r; cat /sys/bus/virtio/devices/virtio0/device; ls /sys/bus/virtio/drivers/vmw_vsock_virtio_transport; ls -l /dev/vsock' &
$S VSOCK-LISTEN:1027,reuseaddr,fork EXEC:/bin/sh,stderr &
( while ! echo "hello from the guest" | $S - VSOCK-CONNECT:2:5000 2>/dev/null; do sleep 0.5; done ) &
echo "KUASAR-VM: READY at $(cut -d' ' -f1 /proc/uptime)"
while true; do sleep 3600; done
