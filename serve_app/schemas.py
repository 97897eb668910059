"""Pydantic models of the HTTP responses (they document /openapi.json; treecore dataclasses stay plain)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serve_app.bounds import MAX_COORDINATE_M, MAX_DIAMETER_M, MAX_PIXELS

#: What `warnings` holds in every answer.
WARNINGS_DESCRIPTION = (
    "what the service ignored or changed, e.g. a form field it does not know (a misspelt real_width); "
    "empty when nothing"
)


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
    warnings: list[str] = Field(description=WARNINGS_DESCRIPTION)


class StoredFileOut(BaseModel):
    """One stored file of a scene, with its own URL and expiry (with Azure: its own read-only SAS URL)."""

    name: str
    url: str
    size_bytes: int
    media_type: str = Field(description="model/obj, model/mtl, application/zip or model/gltf-binary")
    expires_in_s: int | None = Field(description="seconds the URL stays valid from the answer; null: no expiry")
    expires_at: str | None = Field(description="when the URL expires, UTC, ISO 8601 (e.g. 2026-12-01T23:00:00Z)")


class StoredModelResponse(BaseModel):
    """A large model: stored, and downloadable for a limited time (the legacy fields first)."""

    download_url: str = Field(description="the OBJ (or zip, or a job's GLB)")
    filename: str
    filesize_mb: float
    total_trees: int
    message: str
    expires_in: str = Field(description='the legacy lifetime in words, e.g. "1 hour" (Azure SAS); "never"')
    expires_in_s: int | None = Field(description="the same in seconds; null: no expiry")
    expires_at: str | None = Field(description="when download_url expires, UTC, ISO 8601")
    mtl_url: str | None = Field(description="the MTL the OBJ's mtllib names (stored beside it); null for zip, GLB")
    files: list[StoredFileOut] = Field(description="every stored file of the scene: download_url's first")
    warnings: list[str] = Field(description=WARNINGS_DESCRIPTION)


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


def _optional(**bounds: Any) -> Any:
    """An optional field of a JSON body: absent is fine, null is not (the schema shows no default)."""
    return Field(None, json_schema_extra=_no_default, allow_inf_nan=False, **bounds)


class TreeIn(BaseModel):
    """One tree of a /generate-model body: x, y and diameter are required, the rest optional (other fields ignored)."""

    model_config = ConfigDict(extra="allow", title="TreeIn")

    id: int = _optional(ge=0, lt=2**53, description="whole number (default: position in the list + 1)")
    x: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M, allow_inf_nan=False, description="metres east")
    y: float = Field(ge=-MAX_COORDINATE_M, le=MAX_COORDINATE_M, allow_inf_nan=False, description="metres south")
    diameter: float = Field(
        gt=0, le=MAX_DIAMETER_M, allow_inf_nan=False, description="crown diameter, metres (tree height follows it)"
    )
    pixel_x: float = _optional(ge=-MAX_PIXELS, le=MAX_PIXELS)
    pixel_y: float = _optional(ge=-MAX_PIXELS, le=MAX_PIXELS)
    pixel_diameter: float = _optional(ge=0, le=MAX_PIXELS)


class GenerateModelRequest(BaseModel):
    """A /generate-model body: the /detect-trees response as it is (its other fields are ignored, unknown ones
    named in the answer's warnings), or just {"trees": [...]}; or, instead of an object, a bare list of trees."""

    model_config = ConfigDict(extra="allow", title="GenerateModelRequest")

    trees: list[TreeIn] = Field(description="at most MAX_TREES_LIMIT (default 60,000) trees (413 above)")
    base_model: str = _optional(description="base tree model (the query parameter wins; default tree_lowpoly)")
    format: Literal["obj", "zip", "glb"] = _optional(description="obj (default), zip or glb (the query wins)")


class HealthResponse(BaseModel):
    """GET /health (legacy body plus the version)."""

    status: str
    service: str
    message: str
    version: str


class LimitsOut(BaseModel):
    """The service's limits (GET /)."""

    max_upload_bytes: int
    max_image_pixels: int
    max_trees_limit: int
    large_model_threshold: int
    max_jobs: int
    max_running_jobs: int


class InfoResponse(BaseModel):
    """GET /: version, limits, storage, the pipeline and request totals."""

    service: str
    version: str
    docs: str
    limits: LimitsOut
    storage: str = Field(description="local, azure-connection-string or azure-workload-identity")
    pipeline: dict[str, Any] = Field(description="mode (ray-serve or in-process), deployments and replicas")
    api_key_required: bool
    totals: dict[str, Any] = Field(description="requests by route and status, trees detected, tiles")


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
        None,
        description="detect: the /detect-trees response (GeoJSON with format=geojson); detect-and-generate: "
        '{"detection", "model"} where model is the stored-model answer of /generate-model (in model_format)',
    )
    error: dict[str, Any] | None = Field(None, description='{"status", "detail"}')


class JobCreated(BaseModel):
    """POST /jobs: the job's id and where to poll it."""

    id: str
    state: str
    status_url: str
    warnings: list[str] = Field(description=WARNINGS_DESCRIPTION)


class ModelInfo(BaseModel):
    """One base tree model."""

    name: str
    obj_url: str
    mtl_url: str
    source: Literal["package", "blob"] = Field(
        description="package: shipped with the service (wins a name clash); blob: the tree-models container"
    )


class ModelList(BaseModel):
    """GET /tree-models."""

    models: list[ModelInfo]
    default: str


class PointOut(BaseModel):
    """A GeoJSON Point."""

    type: Literal["Point"]
    coordinates: list[float] = Field(
        min_length=2, max_length=2, description="[easting, northing] in the CRS; image-metric frame: [x, -y] metres"
    )


class TreePropertiesOut(TreeOut):
    """A tree's GeoJSON properties: the legacy tree fields plus diameter_m."""

    diameter_m: float = Field(description="crown diameter, metres (same as diameter)")


class TreeFeatureOut(BaseModel):
    """One tree as a GeoJSON Feature."""

    type: Literal["Feature"]
    id: int
    geometry: PointOut
    properties: TreePropertiesOut


class CrsNamePropertiesOut(BaseModel):
    """The CRS's name."""

    name: str = Field(description='"urn:ogc:def:crs:EPSG::<code>"; image-metric frame: a local metre CRS (WKT)')


class CrsOut(BaseModel):
    """The GeoJSON 2008 "crs" member (dropped by RFC 7946; GDAL and QGIS read it)."""

    type: Literal["name"]
    properties: CrsNamePropertiesOut


class GeoreferenceOut(BaseModel):
    """Where the image lies: the client's origin and EPSG code, or its GeoTIFF tags."""

    source: Literal["form", "geotiff"]
    epsg: int
    crs: str
    origin_easting: float = Field(description="CRS easting of the image's top-left corner")
    origin_northing: float = Field(description="CRS northing of the image's top-left corner")
    pixel_scale: list[float] | None = Field(description="GeoTIFF: CRS units per pixel (x, y); form: null")
    raster_type: Literal["PixelIsArea", "PixelIsPoint"] | None
    geographic: bool = Field(description="the CRS is in degrees")


class DetectGeoJSON(BaseModel):
    """The /detect-trees response as GeoJSON (format=geojson, or Accept: application/geo+json)."""

    type: Literal["FeatureCollection"]
    name: str
    crs: CrsOut
    frame: Literal["image-metric", "crs"] = Field(
        description="image-metric: metres from the top-left corner, x right, y up; crs: the georeference's CRS"
    )
    georeference: GeoreferenceOut | None
    features: list[TreeFeatureOut]
    total_trees: int
    image_width: int
    image_height: int
    meters_per_pixel: float
    meters_per_pixel_x: float
    meters_per_pixel_y: float
    parameters: dict[str, Any]
    tile_count: int
    timings: dict[str, float]
    warnings: list[str] = Field(description="e.g. a GeoTIFF pixel size that disagrees with real_width/real_height")


def inline_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's JSON schema with its $defs inlined (a `responses` entry of OpenAPI cannot point into $defs).

    Args:
        model: a pydantic model without recursive references.

    Returns:
        The schema.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return resolve(defs[ref.removeprefix("#/$defs/")])
            return {key: resolve(value) for key, value in node.items()}
        if isinstance(node, list):
            return [resolve(value) for value in node]
        return node

    return dict(resolve(schema))
