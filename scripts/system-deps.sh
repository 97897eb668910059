#!/usr/bin/env bash
# Installs the system tools the test suite drives (kubectl is expected on the machine), only when missing.
# podman/buildah/debootstrap build and inspect the container image; needs root (CI and dev machines here are).
set -euo pipefail
need=()
for tool in podman buildah debootstrap; do
  command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
# The rootless/chroot build stack: user namespaces helpers and the overlay fuse driver.
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${need[*]}; install them (as root: apt-get install podman buildah debootstrap)" >&2
    exit 1
  fi
  echo "system-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends podman buildah debootstrap uidmap fuse-overlayfs >/dev/null
fi
command -v kubectl >/dev/null 2>&1 || { echo "system-deps: kubectl not found" >&2; exit 1; }
