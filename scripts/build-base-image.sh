#!/usr/bin/env bash
# Builds a local Debian bookworm (Python 3.11) base image with debootstrap and imports it into podman, cached by tag.
#
# The image stands in for rayproject/ray:<ray>-py311 when testing the Dockerfile offline of any container registry:
# same Debian/Python 3.11 userland, no Ray (the Dockerfile installs the pinned Ray itself when the base lacks it).
# Usage: scripts/build-base-image.sh [TAG]   -> prints the image reference on stdout.
# The Debian mirror is read from this machine's apt sources (or DEBIAN_MIRROR), so no host name lives in the repo.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The tag carries a hash of this script, so editing the recipe makes a new image instead of reusing a stale one.
recipe="$(sha256sum "$here/build-base-image.sh" | cut -c1-12)"
tag="${1:-localhost/treedet-base:bookworm-py311-$recipe}"
podman_cmd=(podman ${PODMAN_STORAGE_OPTS:-})

if "${podman_cmd[@]}" image exists "$tag"; then
    echo "$tag"
    exit 0
fi

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(grep -h -o -E '^URIs: *[^ ]+/debian$' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n1 | sed 's/^URIs: *//' || true)"
fi
if [ -z "$mirror" ]; then
    mirror="$(grep -h -o -E '^deb +[^ ]+/debian ' /etc/apt/sources.list 2>/dev/null | head -n1 | awk '{print $2}' || true)"
fi
if [ -z "$mirror" ]; then
    echo "build-base-image: no Debian mirror found in apt sources; set DEBIAN_MIRROR" >&2
    exit 1
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
    bookworm "$rootfs" "$mirror" >&2
# Trim what an image does not need: apt lists and caches, docs, man pages.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
tar -C "$rootfs" -c . | "${podman_cmd[@]}" import \
    --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$tag" >&2
echo "$tag"
