"""A real Azurite blob emulator (npm package `azurite`, installed into node_modules by `make test`)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
#: Azurite's documented development account (public: it exists only in the emulator).
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def ensure_installed() -> Path:
    """node_modules/.bin/azurite-blob, running `npm ci` in the repo when it is missing."""
    if not AZURITE_BLOB.exists():
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm is needed to install azurite (see README: test prerequisites)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
    return AZURITE_BLOB


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Azurite:
    """One Azurite blob service on a loopback port, with its data in `location`; start(), stop(), start() again."""

    def __init__(self, location: Path, port: int | None = None) -> None:
        self.location, self.port = location, port or _free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def connection_string(self) -> str:
        """The connection string of the emulator's account."""
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint=http://127.0.0.1:{self.port}/{ACCOUNT};"
        )

    def start(self, timeout_s: float = 60) -> None:
        """Start and wait until the port accepts connections."""
        command = [str(ensure_installed()), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)]
        command += ["--location", str(self.location), "--silent", "--skipApiVersionCheck", "--loose"]
        self.process = subprocess.Popen(
            command, cwd=self.location, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"azurite exited: {self.process.stderr.read().decode() if self.process.stderr else ''}"
                )
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"azurite did not listen on port {self.port} within {timeout_s} s")

    def stop(self) -> None:
        """Kill the whole process group (node and anything it started) and wait for it.

        SIGKILL, not SIGTERM: Azurite's graceful shutdown takes about 10 s, and an outage is what the tests want.
        """
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
