"""Pydantic models of the HTTP responses (they document /openapi.json; treecore dataclasses stay plain)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorResponse(BaseModel):
    """Every error: a message a person can act on."""

    detail: str


class TreeOut(BaseModel):
    """One tree: metres from the image's top-left corner (x right, y down), and the same in pixels."""

    id: int
    x: float = Field(description="metres, right from the left edge")
    y: float = Field(description="metres, down from the top edge")
    diameter: float = Field(description="crown diameter, metres")
    pixel_x: float
    pixel_y: float
    pixel_diameter: float


class DetectResponse(BaseModel):
    """The /detect-trees response (legacy fields first)."""

    trees: list[TreeOut]
    total_trees: int
    image_width: int = Field(description="pixels")
    image_height: int = Field(description="pixels")
    meters_per_pixel: float = Field(description="geometric mean of the x and y scales")
    meters_per_pixel_x: float
    meters_per_pixel_y: float
    parameters: dict[str, Any] = Field(description="the detection parameters used")
    tile_count: int = Field(description="sub-tiles the image was cut into")
    timings: dict[str, float] = Field(description="seconds per stage: decode_s, detect_s, merge_s, total_s")


class StoredModelResponse(BaseModel):
    """A large model: stored, and downloadable for a limited time."""

    download_url: str
    filename: str
    filesize_mb: float
    total_trees: int
    message: str
    expires_in: int | None = Field(description="seconds the URL stays valid")


class ModelOptions(BaseModel):
    """Options of /generate-model, in the JSON body next to the trees (or as query parameters)."""

    base_model: str = Field("tree_lowpoly", description="base tree model name (GET /tree-models)")
    format: Literal["obj"] = "obj"


class HealthResponse(BaseModel):
    """GET /health (legacy body plus the version)."""

    status: str
    service: str
    version: str


class ProgressOut(BaseModel):
    """How far a job has come."""

    stage: str
    tiles_done: int
    tiles_total: int
    trees_so_far: int


class JobResponse(BaseModel):
    """GET /jobs/{id}: state and progress, then the result or the error."""

    id: str
    kind: Literal["detect", "detect-and-generate"]
    state: Literal["queued", "running", "succeeded", "failed", "cancelled"]
    stage: str
    progress: ProgressOut
    created_at: float = Field(description="epoch seconds")
    finished_at: float | None = None
    result: dict[str, Any] | None = Field(
        None, description='detect: the /detect-trees response; detect-and-generate: {"detection", "model"}'
    )
    error: dict[str, Any] | None = Field(None, description='{"status", "detail"}')


class JobCreated(BaseModel):
    """POST /jobs: the job's id and where to poll it."""

    id: str
    state: str
    status_url: str


class ModelInfo(BaseModel):
    """One base tree model."""

    name: str
    obj_url: str
    mtl_url: str


class ModelList(BaseModel):
    """GET /tree-models."""

    models: list[ModelInfo]
    default: str
