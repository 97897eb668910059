"""`build_app(args)`: the application graph, from the typed `args` of serve_config.yaml and the settings, read once."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from ray.serve import Application
from ray.serve.deployment import Deployment

from serve_app.deployments import Detector, Ingress, ModelAssembler, TileSplitter
from serve_app.job_runner import JobRunner
from serve_app.serve_stages import StageOptions
from serve_app.settings import Settings
from serve_app.stages import DEFAULT_SHORT_PATH_MEGAPIXELS, DEFAULT_TILE_MEGAPIXELS, TilePolicy
from treecore.basemodels import DEFAULT_MODELS_DIR


class AppArgs(BaseModel):
    """Structural arguments of the application (serve_config.yaml `args`); unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")

    tile_megapixels: float = Field(
        DEFAULT_TILE_MEGAPIXELS,
        gt=0,
        le=1000,
        description="target tile size, megapixels: a large image is cut into tiles of about this size (and at "
        "least one per running Detector replica); it bounds a Detector's memory",
    )
    short_path_megapixels: float = Field(
        DEFAULT_SHORT_PATH_MEGAPIXELS,
        ge=0,
        le=1000,
        description="largest image, megapixels, sent whole to one Detector in one call (capped at tile_megapixels; "
        "0: every image goes through the TileSplitter)",
    )
    detector_attempts: int = Field(3, ge=1, le=10, description="tries per call when a replica dies")
    assembler_threads: int = Field(2, ge=1, le=64, description="threads formatting OBJ parts")
    trees_per_part: int = Field(0, ge=0, description="trees per OBJ part (0: treecore's default)")
    models_dir: str = Field(str(DEFAULT_MODELS_DIR), description="folder of base tree models")


def bind_graph(
    app_args: AppArgs, *, settings: Settings | None = None, options: dict[str, dict[str, Any]] | None = None
) -> Application:
    """Bind Ingress over TileSplitter, Detector, ModelAssembler and JobRunner, with the settings bound into each.

    Args:
        app_args: structural arguments.
        settings: process settings (default: read from this process's environment, once, here).
        options: per deployment name, `.options(...)` keyword arguments (tests size replicas this way;
            serve_config.yaml does it for `serve run` and KubeRay).

    Returns:
        The bound application.

    Raises:
        SettingsError: a variable of the environment that cannot be used (at deploy time, not on the first request).
    """
    settings = settings if settings is not None else Settings.from_env()
    options = options or {}

    def with_options(deployment: Any) -> Deployment:
        named: Deployment = deployment
        return named.options(**options[named.name]) if named.name in options else named

    splitter = with_options(TileSplitter).bind(settings)
    detector = with_options(Detector).bind(settings)
    assembler = with_options(ModelAssembler).bind(
        settings, app_args.models_dir, app_args.assembler_threads, app_args.trees_per_part
    )
    policy = TilePolicy.from_megapixels(app_args.tile_megapixels, app_args.short_path_megapixels)
    stage_options = StageOptions(policy, app_args.detector_attempts)
    runner = with_options(JobRunner).bind(settings, splitter, detector, assembler, stage_options)
    return with_options(Ingress).bind(
        settings, splitter, detector, assembler, stage_options, app_args.models_dir, runner
    )


def build_app(args: dict[str, Any]) -> Application:
    """The Serve application (the import path in serve_config.yaml).

    Args:
        args: serve_config.yaml's `args` (see AppArgs); an empty dict takes every default.

    Returns:
        The bound application, ready for `serve.run` or `serve run serve_config.yaml`.
    """
    return bind_graph(AppArgs.model_validate(args or {}))
