"""The built image started as a container would start it: its own CMD, user, environment and working directory.

`podman run` is refused on the CI machines (crun's setrlimit), so run_in_rootfs.sh plays the runtime: the
image's mounted root filesystem, read-only, in fresh PID, network and mount namespaces (loopback only), with
tmpfs /tmp and /dev/shm as on Kubernetes. The test reaches the service from inside that network namespace
(nsenter), waits for /health, sends one synthetic image through /detect-trees, stops the service with SIGTERM
and checks that no process and no mount of it is left.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.image.conftest import ROOT
from tests.treecore.conftest import Disc, draw_scene, encode
from treecore.detect import detect_trees
from treecore.imageio import decode_image
from treecore.report import result_to_dict
from treecore.types import DEFAULT_METHOD, DetectionParams

pytestmark = pytest.mark.image

LAUNCHER = Path(__file__).with_name("run_in_rootfs.sh")
#: Bounds, not timings: the service answered /health after 20-100 s on 2 cores shared with other test runs.
START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90
#: Ray's object store, and the /dev/shm that holds it: small, as the machine is shared (the manifests give 1 GiB).
OBJECT_STORE_BYTES = 256 * 2**20
SHM_BYTES = 512 * 2**20
#: Three crowns 6 m across, far apart (cluster_threshold 10 m), on a 100 x 100 m image: the legacy defaults.
DISCS = [Disc(80, 80, 12), Disc(300, 120, 12), Disc(180, 320, 12)]

#: Runs in the service's network namespace with the test's Python: /health until 200, then one detection.
CLIENT = """
import json, sys, time
import httpx

base, png, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
with httpx.Client(base_url=base, trust_env=False, timeout=10) as http:
    deadline, attempts, health = time.monotonic() + timeout, 0, None
    while health is None and time.monotonic() < deadline:
        attempts += 1
        try:
            answer = http.get("/health")
            if answer.status_code == 200:
                health = answer.json()
                break
        except httpx.TransportError:
            pass
        time.sleep(1)
    if health is None:
        print(json.dumps({"health": None, "attempts": attempts}))
        sys.exit(0)
    with open(png, "rb") as f:
        image = f.read()
    out = {"health": health, "attempts": attempts}
    # The default method (the packaged network, run by OpenCV in the image), then the tree-top method.
    for key, extra in (("", {}), ("watershed_", {"method": "watershed"})):
        answer = http.post(
            "/detect-trees",
            files={"image": ("scene.png", image, "image/png")},
            data={"real_width": "100", "real_height": "100", **extra},
            timeout=300,
        )
        json_body = answer.headers.get("content-type", "").startswith("application/json")
        out[key + "status"] = answer.status_code
        out[key + "body"] = answer.json() if json_body else answer.text
    print(json.dumps(out))
"""


def _cpus_the_app_needs(config: dict[str, Any]) -> int:
    """CPUs the serve config reserves when every deployment runs its minimum replicas (Serve's default: 1 each)."""
    total = 0.0
    for app in config["applications"]:
        for deployment in app.get("deployments", []):
            autoscaling = deployment.get("autoscaling_config") or {}
            replicas = deployment.get("num_replicas", autoscaling.get("min_replicas", 1))
            replicas = 1 if replicas == "auto" else int(replicas)
            total += replicas * float((deployment.get("ray_actor_options") or {}).get("num_cpus", 1))
    return max(1, int(-(-total // 1)))


def _image_environment(built_image: dict[str, Any], rootfs: Path) -> dict[str, str]:
    """The image's Env, with HOME from its /etc/passwd as container runtimes add it."""
    env = dict(item.split("=", 1) for item in built_image["Config"].get("Env") or [])
    uid = (built_image["Config"].get("User") or "0").split(":")[0]
    for line in (rootfs / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if uid in (fields[0], fields[2]):
            env.setdefault("HOME", fields[5])
    return env


def _children(pid: int) -> list[int]:
    """Host PIDs of pid's children."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:  # gone meanwhile
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def _in_namespace(kind: str, inode: str) -> list[int]:
    """Host PIDs of the processes whose `kind` namespace (pid, mnt, net) is `inode`."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "ns" / kind) == inode:
                    pids.append(int(entry.name))
            except OSError:  # gone meanwhile, or a kernel thread
                pass
    return pids


def _mounts_under(path: Path) -> list[str]:
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if str(path) in line.split()[4]]


@dataclass
class Running:
    """The service started in the image: PID 1 of its namespaces (host PID), its log and the namespaces."""

    launcher: subprocess.Popen[bytes]
    init_pid: int
    namespaces: dict[str, str]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def service(built_image: dict[str, Any], rootfs: Path) -> Iterator[Running]:
    """The image's ENTRYPOINT + CMD, as its user, running until the test module ends; then stopped and checked."""
    config = built_image["Config"]
    command = list(config.get("Entrypoint") or []) + list(config.get("Cmd") or [])
    assert command, "the image has no CMD"
    env = _image_environment(built_image, rootfs)
    # Ray on this machine only: the CPUs the serve config reserves (not every core of a large CI machine, where
    # Ray would start a worker per core), a small object store, and no usage report (there is no network).
    cpus = _cpus_the_app_needs(yaml.safe_load((ROOT / "serve_config.yaml").read_text()))
    env |= {
        "RAY_OVERRIDE_RESOURCES": json.dumps({"CPU": cpus}),
        "RAY_DEFAULT_OBJECT_STORE_MAX_MEMORY_BYTES": str(OBJECT_STORE_BYTES),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    for tool in ("unshare", "nsenter", "chroot", "ip", "mount"):
        assert shutil.which(tool), f"{tool} is needed (util-linux, coreutils, iproute2)"
    work = Path(tempfile.mkdtemp(prefix="tree-image-run-"))
    env_file = work / "env"
    env_file.write_bytes(b"".join(f"{k}={v}".encode() + b"\0" for k, v in env.items()))
    log = work / "service.log"
    mounts_before = _mounts_under(rootfs)
    user = config.get("User") or "0"
    if ":" not in user:
        user += f":{user}"
    # Writable beyond /tmp and /dev/shm: only HOME. Ray 2.60's ray.init(), which the standalone `serve run`
    # calls, turns on token authentication for the new local cluster and writes the token to ~/.ray/auth_token
    # (KubeRay's `ray start` only reads one), so a read-only root needs a writable HOME for this CMD.
    home = env.get("HOME", "")
    args = [str(rootfs), config.get("WorkingDir") or "/", user, str(env_file), str(SHM_BYTES), home, "--", *command]
    with log.open("wb") as out:
        launcher = subprocess.Popen(
            ["unshare", "--pid", "--net", "--mount", "--fork", "--kill-child", "bash", str(LAUNCHER), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running: Running | None = None
    try:
        init_pid = _wait_for_child(launcher)
        namespaces = {kind: os.readlink(f"/proc/{init_pid}/ns/{kind}") for kind in ("pid", "mnt", "net")}
        running = Running(launcher, init_pid, namespaces, log)
        yield running
    finally:
        _stop(launcher, running)
        print(f"service log (exit status {launcher.returncode}):\n{log.read_text(errors='replace')[-6000:]}")
        shutil.rmtree(work, ignore_errors=True)
    # Nothing is left: no process in the service's namespaces, no mount of it on the image's root.
    if running is not None:
        for kind, inode in running.namespaces.items():
            assert _in_namespace(kind, inode) == [], f"processes left in the service's {kind} namespace"
    assert _mounts_under(rootfs) == mounts_before
    assert not work.exists()


def _wait_for_child(launcher: subprocess.Popen[bytes]) -> int:
    """Host PID of unshare's child (PID 1 in the new namespaces), once it exists."""
    for _ in range(200):
        if launcher.poll() is not None:
            pytest.fail(f"unshare exited with {launcher.returncode}")
        children = _children(launcher.pid)
        if children:
            return children[0]
        time.sleep(0.05)
    pytest.fail("unshare started no child")


def _stop(launcher: subprocess.Popen[bytes], running: Running | None) -> None:
    """SIGTERM to the service (through PID 1), then, if it is still there, SIGKILL to the whole PID namespace."""
    if launcher.poll() is None and running is not None:
        try:
            os.kill(running.init_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        launcher.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        if running is not None:
            try:  # PID 1's death takes every process of its namespace with it
                os.kill(running.init_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        launcher.kill()
        launcher.wait(timeout=30)


def _serve_process(running: Running) -> int:
    (pid,) = _children(running.init_pid)  # the chroot, which became env, which became the CMD
    return pid


def _status(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def test_the_cmd_serves_health_and_a_detection_as_the_image_user(
    service: Running, built_image: dict[str, Any], tmp_path: Path
) -> None:
    png = tmp_path / "scene.png"
    png.write_bytes(encode(draw_scene(400, 400, DISCS)))
    client = subprocess.Popen(
        ["nsenter", f"--net=/proc/{service.init_pid}/ns/net", sys.executable, "-c", CLIENT]
        + ["http://127.0.0.1:8000", str(png), str(START_TIMEOUT_S)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while client.poll() is None and service.launcher.poll() is None:
            time.sleep(0.5)  # the client gives up by itself after START_TIMEOUT_S, or the service stopped
        if client.poll() is None:
            pytest.fail(f"the service stopped (status {service.launcher.returncode}):\n{service.log_tail()}")
        out, err = client.communicate()
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, f"client failed: {err[-3000:]}\nservice log:\n{service.log_tail()}"
    answer = json.loads(out)
    print(f"/health answered after {answer['attempts']} attempts, one second apart")
    assert answer["health"] is not None, f"no 200 from /health in {START_TIMEOUT_S} s:\n{service.log_tail()}"
    assert answer["health"]["status"] == "ok"
    assert answer["status"] == 200, f"{answer['body']}\n{service.log_tail()}"
    # The image's network gives what the repo's gives in this process (the ONNX and cv2.dnn made it in).
    in_process = result_to_dict(detect_trees(decode_image(png.read_bytes(), max_pixels=10**7), DetectionParams()))
    assert answer["body"]["trees"] == in_process["trees"]
    assert answer["body"]["parameters"]["method"] == DEFAULT_METHOD
    assert answer["watershed_status"] == 200, f"{answer['watershed_body']}\n{service.log_tail()}"
    body = answer["watershed_body"]  # the drawn discs, found exactly by the tree-top method
    assert body["total_trees"] == len(DISCS) == len(body["trees"])
    found = sorted((round(t["pixel_x"]), round(t["pixel_y"])) for t in body["trees"])
    for (x, y), disc in zip(found, sorted(DISCS, key=lambda d: (d.col, d.row)), strict=True):
        assert abs(x - disc.col) <= 1 and abs(y - disc.row) <= 1
    # The service ran as the image's user, not as root, in the image's working directory.
    pid = _serve_process(service)
    uid, _, gid = (built_image["Config"].get("User") or "").partition(":")
    status = _status(pid)
    assert status["Uid"].split() == [uid] * 4
    if gid:
        assert status["Gid"].split() == [gid] * 4
    assert "0" not in status["Groups"].split()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    command = list(built_image["Config"].get("Entrypoint") or []) + list(built_image["Config"].get("Cmd") or [])
    # `serve run ...` runs as `python .../serve run ...`
    assert cmdline[len(cmdline) - len(command) + 1 :] == command[1:], cmdline
