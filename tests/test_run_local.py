"""`make run` (scripts/run-local.sh) stops cleanly: Ctrl-C at a terminal, or SIGTERM without one, exits 0.

At a terminal the test is `make run` on a pseudo-terminal, and Ctrl-C is the byte the terminal turns into SIGINT
for its foreground process group: what a developer does.

Each case starts the real script (its own Ray, the whole serve_config.yaml on a free port: about a minute on two
cores, so two cases only), waits for /health, stops it and checks: exit status 0, no traceback, the closing line,
and no process of its session left.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.serve

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 300  # two shared cores; the session's own Serve may be running too
STOP_TIMEOUT_S = 120
STOPPED = "Stopped Serve and Ray."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(tmp_path: Path, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "API_KEY", "AZURE_STORAGE"))}
    env.update(
        SERVE_PORT=str(port),
        RAY_NUM_CPUS="2",
        RAY_OBJECT_STORE_BYTES=str(500_000_000),
        GENERATED_MODELS_DIR=str(tmp_path / "models"),
    )
    return env


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _session_processes(sid: int) -> dict[int, str]:
    """The live processes of session `sid` (the script's, with everything it started): command line by pid."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if int(fields[3]) == sid and fields[0] != "Z":
            found[int(stat.parent.name)] = cmdline
    return found


def _kill_session(sid: int) -> None:
    """SIGKILL whatever of the session is left (a failed test must not leave a Ray running)."""
    for pid in _session_processes(sid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _check_stopped(status: int, output: str, sid: int, port: int) -> None:
    assert status == 0, output[-4000:]
    assert "Traceback" not in output and "make: ***" not in output, output[-6000:]
    assert output.rstrip().endswith(STOPPED), output[-2000:]
    assert not _healthy(port)
    deadline = time.monotonic() + 30  # Ray's reaper may need a moment after the script exits
    while _session_processes(sid) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _session_processes(sid), _session_processes(sid)


def test_ctrl_c_of_make_run_at_a_terminal_stops_cleanly(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(tmp_path, port)
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader on the pty, as a shell at a terminal would start make
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.chdir(ROOT)
        try:
            # `make run` itself, as the README says (-o venv: the venv running this test is installed already).
            os.execvpe("make", ["make", "--no-print-directory", "-o", "venv", "run"], env)
        finally:
            os._exit(127)
    output = bytearray()

    def read(seconds: float) -> bool:
        """Collect the terminal's output for `seconds`; False once it is closed."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if select.select([fd], [], [], 0.1)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:
                    return False
                if not chunk:
                    return False
                output.extend(chunk)
        return True

    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _healthy(port):
            assert read(1) and time.monotonic() < deadline, output.decode(errors="replace")[-4000:]
        os.write(fd, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground process group
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while read(1):
            assert time.monotonic() < deadline, output.decode(errors="replace")[-4000:]
        _, status = os.waitpid(pid, 0)
        _check_stopped(os.waitstatus_to_exitcode(status), output.decode(errors="replace"), pid, port)
    finally:
        os.close(fd)
        _kill_session(pid)  # only what a failure left


def test_sigterm_without_a_terminal_stops_cleanly(tmp_path: Path) -> None:
    # A supervisor's or `kill`'s SIGTERM to the process group; a SIGINT there takes the same trap (one case only:
    # each starts a Ray).
    port = _free_port()
    log = tmp_path / "run.log"
    with log.open("wb") as out:
        run = subprocess.Popen(
            ["bash", "scripts/run-local.sh"],
            cwd=ROOT,
            env=_env(tmp_path, port),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # pytest may run with SIGINT ignored; a shell's Ctrl-C would find it at its default.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not _healthy(port):
                assert run.poll() is None and time.monotonic() < deadline, log.read_text()[-4000:]
                time.sleep(1)
            os.killpg(run.pid, signal.SIGTERM)
            status = run.wait(timeout=STOP_TIMEOUT_S)
            _check_stopped(status, log.read_text(), run.pid, port)
        finally:
            _kill_session(run.pid)  # only what a failure left
            run.wait()
