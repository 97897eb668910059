"""Scaling with real Ray on this machine: each scenario in a child pytest process with a Ray cluster of its own.

    scenario_autoscaling.py  Serve autoscaling of the Detector (1 to 4 replicas) on one node with 6 logical CPUs
    scenario_multinode.py    a head and two worker nodes: Detectors pinned to the workers, a worker killed mid-request,
                             a stored model (Azurite) downloaded from every node
    scenario_autoscaler.py   Ray's fake multi-node autoscaler starts worker nodes for the Detector and removes them

Why child processes: a process holds one Ray connection, and the service tests' session fixture
(tests/serve_app/conftest.py) keeps one open for the whole session, while each scenario needs a cluster shaped its
own way (6 logical CPUs, several nodes, an autoscaling config). So `pytest` and `make test` run these three tests
in the same session as everything else, and each of them runs its scenario file with `python -m pytest <file>` in a
new process session; a scenario file can also be run alone the same way (its fixtures start and stop its cluster).
When the child ends (passed, failed or timed out), every process still in its session or working in its temporary
folder (Azurite) is killed by id (Ray nodes started by the fake autoscaler are children of the head's monitor and
outlive a failed child), and its Ray files are removed: RAY_TMPDIR points Ray's default folder (and its
current-cluster file) into a folder of this test, never /tmp/ray, which other Ray users of the machine share.
Coverage: the children's code is test code and Ray replicas are not measured anyway (see the Makefile).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.scale

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SCENARIOS = ("scenario_autoscaling.py", "scenario_multinode.py", "scenario_autoscaler.py")
#: Seconds a scenario may take at most, all its tests together: each takes about 2 minutes on the 2-core machine
#: (up to 3.5 when other work shares it); the rest is headroom for a slow machine, never a timing assertion.
SCENARIO_TIMEOUT_S = 600


def _left_processes(session_id: int, folder: Path) -> list[int]:
    """Ids of the processes in session `session_id`, or working in `folder` (Azurite runs in a session of its
    own, in a folder under the child's --basetemp), read from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            cwd = os.readlink(entry / "cwd")
        except OSError:  # gone meanwhile, or not ours to read
            continue
        fields = stat.rpartition(")")[2].split()  # after "(comm)": state, ppid, pgrp, session, ...
        if int(fields[3]) == session_id or Path(cwd).is_relative_to(folder):
            pids.append(int(entry.name))
    return pids


def _kill_left(session_id: int, folder: Path) -> list[int]:
    """SIGKILL every process left by the child; their ids."""
    left = _left_processes(session_id, folder)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str, tmp_path: Path) -> None:
    timeout = SCENARIO_TIMEOUT_S
    ray_tmp = tempfile.mkdtemp(prefix="rs-", dir="/tmp")  # short: Ray's socket paths must stay under 108 bytes
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, "PYTHONUNBUFFERED": "1"}
    env.pop("RAY_ADDRESS", None)
    log = tmp_path / "scenario.log"
    command = [sys.executable, "-m", "pytest", str(HERE / scenario), "-x", "-q", "-s", "--durations=0"]
    command += ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "child"), "-o", f"timeout={timeout}"]
    with log.open("wb") as out:
        # A session of its own: every process the child starts (Ray nodes included) can be found and killed after.
        child = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code = child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            left = _kill_left(child.pid, tmp_path)
            child.wait(timeout=30)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    # A raylet that loses its node prints its last 20 log lines ("[state-dump] ..."): noise here.
    text = "\n".join(line for line in log.read_text(errors="replace").splitlines() if "[state-dump]" not in line)
    print(text[-3000:])
    print(f"{scenario}: {len(left)} processes were left in its session (killed)")
    assert code == 0, f"{scenario} {'timed out' if code is None else f'exited {code}'}:\n{text[-8000:]}"
    summary = [line for line in text.splitlines() if " passed" in line]
    assert summary and " failed" not in summary[-1] and " error" not in summary[-1], text[-3000:]
