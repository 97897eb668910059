"""The tuning page's modules under Node's own test runner: tests/js/*.test.mjs (api, jobs, model, render)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_page_modules_pass_their_node_tests() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is needed (make test installs the npm tools with it)")
    assert sorted(p.name for p in (ROOT / "tests" / "js").glob("*.test.mjs")), "no Node tests found"
    done = subprocess.run(
        [node, "--test", "tests/js/"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"node --test tests/js/ failed:\n{done.stdout[-8000:]}\n{done.stderr[-2000:]}"
    assert "# fail 0" in done.stdout, done.stdout[-4000:]
