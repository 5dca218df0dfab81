#!/bin/busybox sh
# /init of the kuasar-py guest image (kuasar.vmm.image): the only code that runs before kuasar-agent.
#
# 1. load the virtio, 9p and vsock modules (listed in dependency order in /lib/modules/order);
# 2. mount the host's root, exported read-only by QEMU over 9p (tag "hostroot"), under an overlay
#    whose upper layer is a tmpfs: the guest may write anywhere (into its own RAM), nothing of the
#    host is hidden (the project may live under /tmp or /root) and nothing reaches the host;
# 3. switch_root into it and exec the host's Python running kuasar-agent as PID 1 (the agent does
#    the rest of early init: /proc, /sys, /dev, /dev/pts, /dev/shm, /run, cgroups).
#
# Kernel command line: kuasar.python=PATH (required), kuasar.hostname=NAME; task.* words are the
# agent's. Any failure is one "KUASAR-INIT: error ..." line on the serial console and a power-off,
# so the host's launcher reports it with the console tail instead of waiting for its boot timeout.
B=/bin/busybox
$B mkdir -p /proc /sys /dev /newroot
$B mount -t proc proc /proc
$B mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "KUASAR-INIT: kernel up at $($B cut -d' ' -f1 /proc/uptime)"

fail() {
    echo "KUASAR-INIT: error $*"
    $B sync
    $B poweroff -f
    while :; do $B sleep 60; done
}

for module in $($B cat /lib/modules/order); do
    $B insmod "/lib/modules/$module.ko" || fail "cannot load module $module"
done

python="" hostname=""
for word in $($B cat /proc/cmdline); do
    case "$word" in
        kuasar.python=*) python="${word#kuasar.python=}" ;;
        kuasar.hostname=*) hostname="${word#kuasar.hostname=}" ;;
    esac
done
[ -n "$python" ] || fail "no kuasar.python= on the kernel command line"

$B mkdir -p /host /rw
$B mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=524288,cache=loose hostroot /host \
    || fail "cannot mount the host's root (9p tag hostroot)"
# Writable, in guest RAM, hiding nothing: an overlay whose lower layer is the read-only host root.
$B mount -t tmpfs -o mode=0755 tmpfs /rw && $B mkdir -p /rw/upper /rw/work \
    && $B mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot \
    || fail "cannot mount the overlay of the host's root"
$B chroot /newroot /bin/sh -c '[ -x "$1" ]' sh "$python" || fail "$python is not an executable in the host's root"
echo "KUASAR-INIT: root mounted at $($B cut -d' ' -f1 /proc/uptime)"

$B umount -l /proc
$B umount -l /dev
if [ -n "$hostname" ]; then
    exec $B switch_root /newroot "$python" -m kuasar.agent --home /root --hostname "$hostname"
fi
exec $B switch_root /newroot "$python" -m kuasar.agent --home /root
