"""Process settings: read from the environment once, legacy variable names kept."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: Where generated models go when no Azure storage is configured (relative to the working directory).
DEFAULT_GENERATED_MODELS_DIR = "generated_models"


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int = 0) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _text(env: Mapping[str, str], name: str, default: str = "") -> str:
    return env.get(name, "").strip() or default


def _list(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in _text(env, name).split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    """Everything the service reads from its environment (see the README's configuration table).

    Sizes are bytes, pixels are pixel counts, durations are seconds.
    """

    log_level: str = "INFO"
    azure_connection_string: str = field(default="", repr=False)
    azure_account_url: str = ""
    container_generated_models: str = "generated-models"
    container_tree_models: str = "tree-models"
    max_trees_limit: int = 60_000
    large_model_threshold: int = 20_000
    max_upload_bytes: int = 256 * 1024 * 1024
    max_image_pixels: int = 150_000_000
    api_key: str = field(default="", repr=False)
    generated_models_dir: Path = Path(DEFAULT_GENERATED_MODELS_DIR)
    generated_models_retention_s: int = 24 * 3600
    cors_origins: tuple[str, ...] = ()
    max_jobs: int = 100
    max_running_jobs: int = 4
    job_ttl_s: int = 3600
    #: Memory, bytes, that the requests admitted by one admitting process (an Ingress replica, a job runner) may
    #: need at once (serve_app.admission estimates each request's need); 0: half the memory of the machine or
    #: container (its cgroup limit when there is one) that process runs on.
    memory_budget_bytes: int = 0
    #: Requests that may wait for memory at once in one admitting process; more get 503 with Retry-After at once.
    admission_queue_length: int = 8
    #: Longest wait for memory, seconds, before a 503 with Retry-After; 0: never wait.
    admission_wait_s: int = 30
    #: Blob container whose rasters POST /jobs reads by name (the `image_ref` form field), window by window, with
    #: the service's own credential (the connection string, else the workload identity of AZURE_STORAGE_ACCOUNT_URL).
    container_images: str = "images"
    #: Host names an `image_ref` HTTPS URL (e.g. a SAS URL) may name, lower case; "*.example.net" allows its
    #: subdomains. Comma-separated in RASTER_URL_HOSTS; empty (the default): no URL, only blob names.
    raster_url_hosts: tuple[str, ...] = ()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read the settings.

        Args:
            env: the environment (default: os.environ).

        Returns:
            The settings; unset or empty variables take their defaults.

        Raises:
            SettingsError: a variable that cannot be used, named in the message.
        """
        env = os.environ if env is None else env
        origins = _list(env, "CORS_ORIGINS")
        settings = cls(
            log_level=_text(env, "LOG_LEVEL", "INFO").upper(),
            azure_connection_string=_text(env, "AZURE_STORAGE_CONNECTION_STRING"),
            azure_account_url=_text(env, "AZURE_STORAGE_ACCOUNT_URL"),
            container_generated_models=_text(env, "AZURE_STORAGE_CONTAINER_GENERATED_MODELS", "generated-models"),
            container_tree_models=_text(env, "AZURE_STORAGE_CONTAINER_TREE_MODELS", "tree-models"),
            max_trees_limit=_int(env, "MAX_TREES_LIMIT", 60_000, minimum=1),
            large_model_threshold=_int(env, "LARGE_MODEL_THRESHOLD", 20_000),
            max_upload_bytes=_int(env, "MAX_UPLOAD_BYTES", 256 * 1024 * 1024, minimum=1024),
            max_image_pixels=_int(env, "MAX_IMAGE_PIXELS", 150_000_000, minimum=1),
            api_key=_text(env, "API_KEY"),
            generated_models_dir=Path(_text(env, "GENERATED_MODELS_DIR", DEFAULT_GENERATED_MODELS_DIR)),
            generated_models_retention_s=_int(env, "GENERATED_MODELS_RETENTION_S", 24 * 3600, minimum=60),
            cors_origins=origins,
            max_jobs=_int(env, "MAX_JOBS", 100, minimum=1),
            max_running_jobs=_int(env, "MAX_RUNNING_JOBS", 4, minimum=1),
            job_ttl_s=_int(env, "JOB_TTL_S", 3600, minimum=1),
            memory_budget_bytes=_int(env, "MEMORY_BUDGET_BYTES", 0),
            admission_queue_length=_int(env, "ADMISSION_QUEUE_LENGTH", 8),
            admission_wait_s=_int(env, "ADMISSION_WAIT_S", 30),
            container_images=_text(env, "AZURE_STORAGE_CONTAINER_IMAGES", "images"),
            raster_url_hosts=_list(env, "RASTER_URL_HOSTS"),
        )
        if settings.log_level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
            raise SettingsError(f"LOG_LEVEL must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {settings.log_level}")
        return settings

    @property
    def storage_kind(self) -> str:
        """'azure-connection-string', 'azure-workload-identity' or 'local'."""
        if self.azure_connection_string:
            return "azure-connection-string"
        if self.azure_account_url:
            return "azure-workload-identity"
        return "local"
