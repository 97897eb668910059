"""The `scale` marker: tests that start Ray clusters of their own (tests/scale/test_scale.py)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (strict markers: an unknown one is an error)."""
    config.addinivalue_line("markers", "scale: starts its own Ray cluster in a child process (tests/scale)")
