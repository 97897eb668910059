"""A real Azurite blob emulator (npm package `azurite`, pinned in package.json) for the tests.

`node_modules/.bin/azurite-blob` comes from `npm ci` in the repository root (`make test`; run here when it is
missing). Each emulator runs in its own process group on a free loopback port, in memory, without telemetry,
and is killed (the whole group) when it stops.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
AZURITE_BLOB = ROOT / "node_modules" / ".bin" / "azurite-blob"
#: The emulator's documented development account. The key is public: it exists only in the emulator.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 60


def ensure_azurite() -> Path:
    """node_modules/.bin/azurite-blob, running `npm ci` in the repository root when it is missing."""
    if not AZURITE_BLOB.exists():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail("npm is needed to install azurite (`npm ci` in the repository root)")
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=ROOT, check=True)
    return AZURITE_BLOB


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Azurite:
    """One Azurite blob service on a loopback port: start(), stop() (the outage), start() again.

    Args:
        location: working directory (its log file; no data: the data is kept in memory and lost on stop()).
        tls: (cert.pem, key.pem) to serve HTTPS, which OAuth needs; None: HTTP.
        oauth: accept bearer tokens (`--oauth basic`: checks issuer, audience and lifetime, not signatures).
    """

    def __init__(self, location: Path, *, tls: tuple[Path, Path] | None = None, oauth: bool = False) -> None:
        self.location, self.tls, self.oauth = location, tls, oauth
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = location / "azurite.log"

    @property
    def account_url(self) -> str:
        """http(s)://127.0.0.1:<port>/devstoreaccount1."""
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{ACCOUNT}"

    @property
    def connection_string(self) -> str:
        """The connection string of the emulator's account."""
        scheme = "https" if self.tls else "http"
        return (
            f"DefaultEndpointsProtocol={scheme};AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.account_url};"
        )

    def start(self) -> None:
        """Start and wait (up to START_TIMEOUT_S) until the port accepts connections."""
        command = [str(ensure_azurite()), "--blobHost", "127.0.0.1", "--blobPort", str(self.port)]
        # In memory: Azurite refuses --location with --inMemoryPersistence, so it runs in `location` instead.
        command += ["--inMemoryPersistence", "--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"]
        command += ["--extentMemoryLimit", "512"]  # MB of blob data, not half the machine
        if self.tls:
            command += ["--cert", str(self.tls[0]), "--key", str(self.tls[1])]
        if self.oauth:
            command += ["--oauth", "basic"]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.location, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                pytest.fail(f"azurite exited: {self.log.read_text(errors='replace')[-2000:]}")
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        pytest.fail(f"azurite did not listen on port {self.port} within {START_TIMEOUT_S} s")

    def stop(self) -> None:
        """Kill the whole process group and wait for it (SIGKILL: an outage, and no 10 s graceful shutdown)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        self.process = None
