"""Session-wide test set-up: Hypothesis profiles (deterministic in CI, exploring locally), cloud credentials blanked."""

from __future__ import annotations

import os
from collections.abc import Mapping

import pytest
from hypothesis import HealthCheck, settings

_CLOUD_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_SECRET",
    "API_KEY",
)

# Both profiles start from Hypothesis' own defaults (its built-in "ci" profile, loaded on import when a CI
# variable is set, would otherwise leak into "dev"). Neither has a timing deadline or the too_slow health check:
# a slow or shared machine must never turn a correct example into a failure (the default deadline is 200 ms).
#   ci   the same examples on every run (derandomize: each test's seed comes from the test itself), no example
#        database, so a fresh clone and every rerun test exactly the same cases; print_blob for reproduction.
#   dev  random exploration with the local example database (.hypothesis/), which replays past failures first;
#        `pytest --hypothesis-seed=N` fixes one run's seed.
_BASE = settings.get_profile("default")
_NO_TIMING = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", _BASE, derandomize=True, database=None, print_blob=True, **_NO_TIMING)
settings.register_profile("dev", _BASE, print_blob=True, **_NO_TIMING)


def hypothesis_profile(environ: Mapping[str, str] = os.environ) -> str:
    """This run's profile: HYPOTHESIS_PROFILE when set, else "ci" when CI is true (CI services set it), else "dev"."""
    if environ.get("HYPOTHESIS_PROFILE"):
        return environ["HYPOTHESIS_PROFILE"]
    return "ci" if environ.get("CI", "").strip().lower() in ("1", "true", "yes") else "dev"


# Loaded here, before any test module is imported, so every @settings(...) inherits it; pytest's
# --hypothesis-profile=NAME still wins (the Hypothesis plugin loads it later, at pytest_configure).
settings.load_profile(hypothesis_profile())


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real cloud account by accident."""
    for name in _CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
