#!/usr/bin/env bash
# Installs the Debian tools a test needs (as root, or with passwordless sudo); a no-op when they are present.
#   scripts/system-deps.sh            podman, buildah, debootstrap, ip (the image build and run tests)
#   scripts/system-deps.sh chromium   chromium and a font (the browser test of the /ui page)
set -euo pipefail
case "${1:-image}" in
    image)
        tools=(podman buildah debootstrap ip)
        packages=(podman buildah debootstrap uidmap fuse-overlayfs containers-storage ca-certificates iproute2)
        ;;
    chromium)
        tools=(chromium)
        # Without recommends nothing brings a font, and a page without one renders its text as boxes.
        packages=(chromium fonts-dejavu-core)
        ;;
    *)
        echo "usage: $0 [image|chromium]" >&2
        exit 2
        ;;
esac
need=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || need+=("$tool")
done
if [ "${#need[@]}" -eq 0 ]; then
    exit 0
fi
# As root, or else through passwordless sudo (-n: fail at once rather than ask for a password).
as_root=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        as_root=(sudo -n)
    else
        echo "system-deps: missing ${need[*]}; run as root (or with passwordless sudo):" \
            "apt-get install ${packages[*]}" >&2
        exit 1
    fi
fi
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update -qq
${as_root[@]+"${as_root[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
