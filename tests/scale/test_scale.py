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
When the child ends (passed, failed or timed out), every process still in its session is killed by id (Ray nodes
started by the fake autoscaler are children of the head's monitor and outlive a failed child), and its Ray files
are removed: RAY_TMPDIR points Ray's default folder (and its current-cluster file) into a folder of this test.
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
#: Seconds each scenario may take at most (they take 1-3 minutes on the 2-core machine; the rest is headroom).
SCENARIO_TIMEOUT_S = {"scenario_autoscaling.py": 480, "scenario_multinode.py": 480, "scenario_autoscaler.py": 480}


def _session_processes(session_id: int) -> list[int]:
    """Ids of the processes whose session is `session_id` (read from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rpartition(")")[2].split()  # after "(comm)": state, ppid, pgrp, session, ...
        if int(fields[3]) == session_id and int(entry.name) != os.getpid():
            pids.append(int(entry.name))
    return pids


def _kill_session(session_id: int) -> list[int]:
    """SIGKILL every process left in the child's session; their ids."""
    left = _session_processes(session_id)
    for pid in left:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


@pytest.mark.parametrize("scenario", sorted(SCENARIO_TIMEOUT_S))
def test_scenario(scenario: str, tmp_path: Path) -> None:
    timeout = SCENARIO_TIMEOUT_S[scenario]
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
            code = child.wait(timeout=timeout + 60)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            left = _kill_session(child.pid)
            child.wait(timeout=30)
            shutil.rmtree(ray_tmp, ignore_errors=True)
    text = log.read_text(errors="replace")
    print(text[-3000:])
    assert code == 0, f"{scenario} {'timed out' if code is None else f'exited {code}'}:\n{text[-6000:]}"
    lines = [line for line in text.splitlines() if " passed" in line]
    assert lines and " failed" not in lines[-1], text[-3000:]
    if left:
        print(f"killed {len(left)} processes left in the session of {scenario}")
