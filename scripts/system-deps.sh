#!/usr/bin/env bash
# Installs the Debian tools the image build test needs (podman, buildah, debootstrap); a no-op when present.
set -euo pipefail
need=()
for tool in podman buildah debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "system-deps: missing ${need[*]}; run as root: apt-get install podman buildah debootstrap uidmap fuse-overlayfs" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends podman buildah debootstrap uidmap fuse-overlayfs \
    containers-storage ca-certificates >/dev/null
