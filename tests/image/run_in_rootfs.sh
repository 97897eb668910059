#!/usr/bin/env bash
# Runs an image's command in its root filesystem, the way a container runtime would, without one
# (`podman run` is refused on the CI machines: crun's setrlimit). tests/image/test_image_run.py starts it as
# PID 1 of fresh namespaces:  unshare --pid --net --mount --fork --kill-child bash run_in_rootfs.sh ...
#
#   run_in_rootfs.sh ROOTFS WORKDIR USER ENV_FILE SHM_BYTES HOME_DIR -- COMMAND [ARG...]
#
# ROOTFS read-only (readOnlyRootFilesystem, as in k8s/base/rayservice.yaml), a fresh /proc of this PID
# namespace, /sys read-only, a minimal /dev, tmpfs on /tmp and /dev/shm (the manifests' only writable
# volumes) and, when HOME_DIR is not empty, on HOME_DIR owned by USER; loopback as the only network. COMMAND runs as USER (uid:gid) in WORKDIR with exactly the
# environment in ENV_FILE (NUL-separated NAME=value). Every mount belongs to this mount namespace and goes
# with it; when this script (PID 1) exits, the kernel kills whatever is left in the PID namespace.
# SIGTERM and SIGINT are passed on to COMMAND.
set -euo pipefail
root=$1 workdir=$2 user=$3 env_file=$4 shm_bytes=$5 home_dir=$6
shift 6
[ "${1:-}" = "--" ] && shift
mapfile -d '' environment <"$env_file"

ip link set lo up
mount --bind "$root" "$root"
mount -o remount,bind,ro,nosuid,nodev "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t sysfs -o ro,nosuid,nodev,noexec sysfs "$root/sys"
mount -t tmpfs -o nosuid,noexec,mode=755,size=1m tmpfs "$root/dev"
for node in null zero full random urandom; do
    touch "$root/dev/$node"
    mount --bind "/dev/$node" "$root/dev/$node"
done
ln -s /proc/self/fd "$root/dev/fd"
ln -s /proc/self/fd/0 "$root/dev/stdin"
ln -s /proc/self/fd/1 "$root/dev/stdout"
ln -s /proc/self/fd/2 "$root/dev/stderr"
mkdir "$root/dev/shm"
mount -t tmpfs -o "nosuid,nodev,mode=1777,size=$shm_bytes" tmpfs "$root/dev/shm"
mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs "$root/tmp"
if [ -n "$home_dir" ]; then
    mount -t tmpfs -o "nosuid,nodev,mode=700,uid=${user%%:*},gid=${user#*:}" tmpfs "$root$home_dir"
fi

# chroot switches to USER (groups from the image's /etc/group); env -i -C sets the image's environment and
# working directory, then looks COMMAND up on the image's PATH. Only the image's own binaries run as USER.
chroot --userspec="$user" "$root" /usr/bin/env -i -C "$workdir" "${environment[@]}" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM
trap 'kill -INT "$child" 2>/dev/null || true' INT
status=0
wait "$child" || status=$?
# A trapped signal ends `wait` early while COMMAND is still stopping: wait for it to finish.
while kill -0 "$child" 2>/dev/null; do
    wait "$child" || status=$?
done
echo "run_in_rootfs: command exited with status $status" >&2
exit "$status"
