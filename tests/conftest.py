"""Session-wide test set-up: cloud credentials blanked."""

from __future__ import annotations

import pytest

_CLOUD_VARIABLES = (
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT_URL",
    "AZURE_CLIENT_ID",
    "AZURE_TENANT_ID",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_CLIENT_SECRET",
    "API_KEY",
)


@pytest.fixture(autouse=True)
def _no_cloud_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real cloud account by accident."""
    for name in _CLOUD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
