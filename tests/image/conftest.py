"""The image under test: built once per session with podman on a local Debian bookworm base, then mounted."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/tree-detection:test"
#: Set to an image already built from this Dockerfile to test it instead of building one (it is left in place).
PREBUILT_VARIABLE = "TREE_DETECTION_TEST_IMAGE"


def run(*cmd: str, timeout: float = 1200) -> str:
    """Run cmd in the repo root; its stdout, or a test failure with the end of its output."""
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}"
    return done.stdout


def _image_ids() -> set[str]:
    return set(run("podman", "images", "--all", "--quiet", "--no-trunc").split())


def _ca_bundle() -> str | None:
    system_bundle = "/etc/ssl/certs/ca-certificates.crt"
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), system_bundle):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def image_ref() -> str:
    """The image under test: IMAGE, or the prebuilt one named by PREBUILT_VARIABLE."""
    return os.environ.get(PREBUILT_VARIABLE) or IMAGE


@pytest.fixture(scope="session")
def built_image() -> Iterator[dict[str, Any]]:
    """Build tree-detection:test once, yield its `podman image inspect` record, then remove every image it made."""
    prebuilt = os.environ.get(PREBUILT_VARIABLE)
    if prebuilt:
        yield json.loads(run("podman", "image", "inspect", prebuilt))[0]
        return
    for needed in ("serve_config.yaml", "serve_app/__init__.py"):
        if not (ROOT / needed).exists():
            pytest.fail(f"{needed} is missing: the image cannot be built without it")
    run("bash", "scripts/system-deps.sh")
    base = run("bash", "scripts/build-base-image.sh").strip().splitlines()[-1]
    before = _image_ids()
    cmd = ["podman", "build", "--isolation=chroot", "--ulimit", "nofile=1024:1024", "--format", "docker"]
    cmd += ["--layers=false", "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE]
    bundle = _ca_bundle()
    if bundle:  # a TLS-inspecting proxy's CA reaches pip as a build secret, never as a layer
        cmd += ["--secret", f"id=ca_bundle,src={bundle}"]
    try:
        run(*cmd, ".")
        yield json.loads(run("podman", "image", "inspect", IMAGE))[0]
    finally:
        subprocess.run(["podman", "image", "umount", "--all"], capture_output=True, check=False)
        made = _image_ids() - before
        if made:
            subprocess.run(["podman", "rmi", "--force", *sorted(made)], capture_output=True, check=False)
        subprocess.run(["podman", "rmi", "--force", IMAGE], capture_output=True, check=False)


@pytest.fixture(scope="session")
def rootfs(built_image: dict[str, Any]) -> Iterator[Path]:
    """The built image's filesystem, mounted read-only (podman's overlay mount) for inspection and chroots."""
    mount = Path(run("podman", "image", "mount", image_ref()).strip())
    try:
        yield mount
    finally:
        subprocess.run(["podman", "image", "umount", image_ref()], capture_output=True, check=False)
