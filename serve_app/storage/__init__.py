"""Model storage: one interface (types), two stores (local: one node's folder; azure: Blob), and make_store.

Both are atomic: a reader sees the whole model or nothing. Locally a temporary file in the same folder is
fsynced and renamed into place (one node only: see serve_app.storage.local); on Azure the parts are staged
as blocks and committed once (uncommitted blocks are never visible and are discarded by the service). Every
storage failure is a `StorageError` whose message says which failure it was (the service answers 503);
none contains a key or a SAS signature.

Imports point one way: this package imports `types`, `local` and `azure`; `local` and `azure` import only
`types`; `types` imports neither.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from serve_app.storage.azure import (
    CLOCK_SKEW_S,
    DELEGATION_KEY_LIFETIME_S,
    MAX_BASE_MODEL_BYTES,
    MAX_BLOCK_BYTES,
    MAX_LISTED_BLOBS,
    MIN_BLOCK_BYTES,
    RENEW_BEFORE_S,
    SAS_LIFETIME_S,
    AzureModelStore,
    BlobModels,
    blob_models,
    storage_error,
)
from serve_app.storage.local import STALE_TEMP_S, LocalModelStore
from serve_app.storage.types import (
    Download,
    ModelStore,
    ModelTooLargeError,
    NotStoredError,
    StorageError,
    StoredModel,
    check_name,
)

__all__ = [
    "AzureModelStore",
    "BlobModels",
    "CLOCK_SKEW_S",
    "DELEGATION_KEY_LIFETIME_S",
    "DOWNLOAD_ROUTE",
    "Download",
    "LocalModelStore",
    "MAX_BASE_MODEL_BYTES",
    "MAX_BLOCK_BYTES",
    "MAX_LISTED_BLOBS",
    "MIN_BLOCK_BYTES",
    "ModelStore",
    "ModelTooLargeError",
    "NotStoredError",
    "RENEW_BEFORE_S",
    "SAS_LIFETIME_S",
    "STALE_TEMP_S",
    "StorageError",
    "StorageSettings",
    "StoredModel",
    "blob_models",
    "check_name",
    "make_store",
    "storage_error",
]

logger = logging.getLogger("serve_app")

#: The service's route that serves the local store's files (GET /download/{filename}).
DOWNLOAD_ROUTE = "/download"


class StorageSettings(Protocol):
    """The process settings make_store reads (serve_app.settings.Settings has them)."""

    @property
    def azure_connection_string(self) -> str:
        """AZURE_STORAGE_CONNECTION_STRING, or "" (unset)."""
        ...

    @property
    def azure_account_url(self) -> str:
        """AZURE_STORAGE_ACCOUNT_URL, or "" (unset)."""
        ...

    @property
    def container_generated_models(self) -> str:
        """AZURE_STORAGE_CONTAINER_GENERATED_MODELS."""
        ...

    @property
    def generated_models_dir(self) -> Path:
        """GENERATED_MODELS_DIR."""
        ...

    @property
    def generated_models_retention_s(self) -> int:
        """GENERATED_MODELS_RETENTION_S."""
        ...


def make_store(settings: StorageSettings, *, url_prefix: str = DOWNLOAD_ROUTE) -> ModelStore:
    """The store the settings configure, chosen explicitly.

    - AZURE_STORAGE_CONNECTION_STRING set: Azure Blob, SAS URLs signed with its account key (legacy; Azurite).
      It wins over an account URL set as well.
    - else AZURE_STORAGE_ACCOUNT_URL set: Azure Blob with DefaultAzureCredential (workload identity on AKS),
      SAS URLs signed with a user delegation key.
    - neither: the local folder GENERATED_MODELS_DIR, one node only (logged as a warning).

    Args:
        settings: the process settings.
        url_prefix: the service's download route for local files.

    Returns:
        The store. Nothing is contacted yet: storage problems show at the first save.

    Raises:
        ValueError: a malformed connection string (the message never contains it).
    """
    container = settings.container_generated_models
    if settings.azure_connection_string:
        return AzureModelStore.from_connection_string(settings.azure_connection_string, container)
    if settings.azure_account_url:
        return AzureModelStore.from_account_url(settings.azure_account_url, container)
    logger.warning(
        "generated models go to the local folder %s of this node only: GET %s serves them from the node that "
        "answers, so run one node (one pod), or set AZURE_STORAGE_ACCOUNT_URL or AZURE_STORAGE_CONNECTION_STRING",
        settings.generated_models_dir,
        url_prefix,
    )
    return LocalModelStore(settings.generated_models_dir, url_prefix, retention_s=settings.generated_models_retention_s)
