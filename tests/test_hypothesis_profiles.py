"""The Hypothesis profiles: the same examples on every CI run, random exploration locally, never a deadline."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from tests.conftest import hypothesis_profile


@pytest.mark.parametrize(
    ("environ", "profile"),
    [
        ({}, "dev"),
        ({"CI": "true"}, "ci"),
        ({"CI": "1"}, "ci"),
        ({"CI": "false"}, "dev"),
        ({"CI": "true", "HYPOTHESIS_PROFILE": "dev"}, "dev"),
        ({"HYPOTHESIS_PROFILE": "ci"}, "ci"),
    ],
)
def test_the_profile_follows_ci(environ: dict[str, str], profile: str) -> None:
    assert hypothesis_profile(environ) == profile


def test_ci_is_deterministic_and_no_profile_has_a_deadline() -> None:
    ci, dev = settings.get_profile("ci"), settings.get_profile("dev")
    assert ci.derandomize and ci.database is None and ci.print_blob
    assert not dev.derandomize  # local runs explore (and --hypothesis-seed=N picks the run)
    assert ci.deadline is None and dev.deadline is None
    assert settings.default.deadline is None  # the loaded profile, whichever it is
    assert HealthCheck.too_slow in ci.suppress_health_check and HealthCheck.too_slow in dev.suppress_health_check
