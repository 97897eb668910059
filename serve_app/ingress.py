"""The HTTP API: a FastAPI app factory over the pipeline stages (legacy paths, form fields and defaults)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response

from serve_app import __version__
from serve_app.assembly import (
    FORMATS,
    GLB_MEDIA_TYPE,
    MTL_MEDIA_TYPE,
    OBJ_MEDIA_TYPE,
    ZIP_MEDIA_TYPE,
    InlineModel,
)
from serve_app.bounds import MAX_DIAMETER_M, MAX_ORIGIN_M, MAX_REAL_SIZE_M, MIN_REAL_SIZE_M, check_trees
from serve_app.errors import add_exception_handlers
from serve_app.jobs import JobTable
from serve_app.metrics import Metrics
from serve_app.middleware import ApiKeyMiddleware, BodyLimitMiddleware, HeadersAndMetricsMiddleware
from serve_app.pipeline import Progress, Stages, detect, model_name
from serve_app.schemas import (
    DetectGeoJSON,
    DetectResponse,
    ErrorResponse,
    HealthResponse,
    JobCreated,
    JobResponse,
    ModelList,
    StoredModelResponse,
    inline_schema,
)
from serve_app.settings import Settings
from serve_app.storage import StoredModel
from serve_app.ui import mount_ui
from treecore.basemodels import DEFAULT_MODEL, DEFAULT_MODELS_DIR, check_model_name, list_models, split_model_file_name
from treecore.errors import (
    InvalidGeoreferenceError,
    InvalidImageError,
    InvalidParametersError,
    InvalidTreesError,
    UnknownModelError,
)
from treecore.geo import detection_geojson, resolve_georeference
from treecore.imageio import check_image_size
from treecore.report import result_to_dict
from treecore.treesio import parse_trees
from treecore.types import METHODS, DetectionParams

SERVICE = "tree-detection"
#: The legacy backend's /health message, kept word for word (clients may compare it).
HEALTH_MESSAGE = "Python FastAPI backend is running"
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse}
    for code in (400, 401, 404, 413, 422, 429, 503)  # every status errors.STATUS_CODES can give
}

#: The detection method of a request that names none (treecore's default).
DEFAULT_METHOD = DetectionParams().method
if TYPE_CHECKING:
    Method = str
else:  # the form's choices are treecore's methods: a new method there is offered here unchanged
    Method = Literal[METHODS]


def _metres(description: str, **bound: float) -> Any:
    """A form field of metres: finite, with its lower bound, at most MAX_DIAMETER_M."""
    return Form(
        le=MAX_DIAMETER_M, allow_inf_nan=False, description=f"{description}, at most {MAX_DIAMETER_M:g}", **bound
    )


def _real_size(description: str) -> Any:
    """A form field of an image's real size, metres: finite, from MIN_REAL_SIZE_M to MAX_REAL_SIZE_M."""
    return Form(
        ge=MIN_REAL_SIZE_M,
        le=MAX_REAL_SIZE_M,
        allow_inf_nan=False,
        description=f"{description}, {MIN_REAL_SIZE_M:g} to {MAX_REAL_SIZE_M:g}",
    )


def detection_params(
    hue_min: Annotated[int, Form(ge=0, le=179, description="OpenCV hue, 0-179")] = 35,
    hue_max: Annotated[int, Form(ge=0, le=179, description="OpenCV hue, 0-179")] = 85,
    sat_min: Annotated[int, Form(ge=0, le=255, description="0-255")] = 40,
    sat_max: Annotated[int, Form(ge=0, le=255, description="0-255")] = 255,
    val_min: Annotated[int, Form(ge=0, le=255, description="0-255")] = 40,
    val_max: Annotated[int, Form(ge=0, le=255, description="0-255")] = 255,
    min_diameter: Annotated[float, _metres("smallest crown, metres", ge=0)] = 3.0,
    max_diameter: Annotated[float, _metres("largest crown, metres", gt=0)] = 15.0,
    cluster_threshold: Annotated[float, _metres("merge trees closer than this, metres (0: off)", ge=0)] = 10.0,
    real_width: Annotated[float, _real_size("metres the image covers left to right")] = 100.0,
    real_height: Annotated[float, _real_size("metres the image covers top to bottom")] = 100.0,
    method: Annotated[Method, Form(description=f"one of {', '.join(METHODS)}")] = DEFAULT_METHOD,
) -> DetectionParams:
    """The legacy form fields, with their legacy defaults, as DetectionParams (which checks every range)."""
    return DetectionParams(
        hue_min=hue_min,
        hue_max=hue_max,
        sat_min=sat_min,
        sat_max=sat_max,
        val_min=val_min,
        val_max=val_max,
        min_diameter=min_diameter,
        max_diameter=max_diameter,
        cluster_threshold=cluster_threshold,
        real_width=real_width,
        real_height=real_height,
        method=method,
    )


Params = Annotated[DetectionParams, Depends(detection_params)]
ImageFile = Annotated[UploadFile, File(description="PNG, JPEG or TIFF; 8 or 16 bit; gray, RGB, RGBA or palette")]

GEOJSON_MEDIA_TYPE = "application/geo+json"
#: /detect-trees answers JSON or GeoJSON by the Accept header: caches must keep the two apart.
VARY_ACCEPT = {"Vary": "Accept"}
OutputFormat = Literal["json", "geojson"]


@dataclass(frozen=True)
class OutputOptions:
    """How /detect-trees answers: the output format asked for, and the georeference fields of GeoJSON."""

    format: OutputFormat | None
    origin_easting: float | None
    origin_northing: float | None
    epsg: int | None

    def geojson(self, accept: str | None) -> bool:
        """GeoJSON when format says so, else when the Accept header prefers application/geo+json to JSON."""
        return self.format == "geojson" if self.format is not None else prefers_geojson(accept)

    def georeferenced(self) -> bool:
        """Whether any georeference field was given."""
        return any(v is not None for v in (self.origin_easting, self.origin_northing, self.epsg))

    def shaper(self, data: bytes, accept: str | None) -> Callable[[dict[str, Any]], dict[str, Any]] | None:
        """How the detection is answered: None for the legacy JSON, else its GeoJSON maker (georeference checked
        now, from the fields or the upload's GeoTIFF tags, before any detection runs).

        Args:
            data: the uploaded image's bytes.
            accept: the request's Accept header (None where only `format` chooses, as for jobs).

        Raises:
            InvalidGeoreferenceError: georeference fields with a JSON answer, or an invalid georeference.
        """
        if not self.geojson(accept):
            if self.georeferenced():
                raise InvalidGeoreferenceError(
                    "origin_easting, origin_northing and epsg place the GeoJSON output: "
                    "add format=geojson (or, on /detect-trees, send Accept: application/geo+json)"
                )
            return None
        georef = resolve_georeference(
            data, origin_easting=self.origin_easting, origin_northing=self.origin_northing, epsg=self.epsg
        )
        return lambda detection: detection_geojson(detection, georef)


def output_options(
    origin_easting: Annotated[
        float | None,
        Form(
            ge=-MAX_ORIGIN_M,
            le=MAX_ORIGIN_M,
            allow_inf_nan=False,
            description="GeoJSON: CRS easting of the image's top-left corner, metres (needs epsg)",
        ),
    ] = None,
    origin_northing: Annotated[
        float | None,
        Form(
            ge=-MAX_ORIGIN_M,
            le=MAX_ORIGIN_M,
            allow_inf_nan=False,
            description="GeoJSON: CRS northing of the image's top-left corner, metres (needs epsg)",
        ),
    ] = None,
    epsg: Annotated[
        int | None,
        Form(description="GeoJSON: EPSG code of a projected CRS in metres; alone, names a GeoTIFF's CRS"),
    ] = None,
    format_form: Annotated[
        OutputFormat | None, Form(alias="format", description="json (default) or geojson; or as a query parameter")
    ] = None,
    format_query: Annotated[
        OutputFormat | None, Query(alias="format", description="json (default) or geojson; or as a form field")
    ] = None,
) -> OutputOptions:
    """The output fields of /detect-trees (all optional: without them the legacy JSON answer is unchanged)."""
    if format_form is not None and format_query is not None and format_form != format_query:
        raise InvalidParametersError(
            f"format is given twice and differs: {format_query!r} (query) and {format_form!r} (form field)"
        )
    return OutputOptions(format_query or format_form, origin_easting, origin_northing, epsg)


def prefers_geojson(accept: str | None) -> bool:
    """Whether an Accept header ranks application/geo+json above application/json (q values; ties: JSON).

    Args:
        accept: the header, e.g. "application/geo+json" or "application/json, text/plain, */*".

    Returns:
        True for GeoJSON.
    """
    quality = {"application/json": 0.0, GEOJSON_MEDIA_TYPE: 0.0}
    for item in (accept or "").split(","):
        media, *params = (part.strip() for part in item.split(";"))
        if media.lower() not in quality:
            continue
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        quality[media.lower()] = max(quality[media.lower()], q if 0 <= q <= 1 else 0.0)
    return quality[GEOJSON_MEDIA_TYPE] > quality["application/json"]


def create_app(
    settings: Settings,
    stages: Stages,
    *,
    metrics: Metrics | None = None,
    models_dir: Path = DEFAULT_MODELS_DIR,
) -> FastAPI:
    """The service's FastAPI app.

    Args:
        settings: process settings (limits, storage, API key, CORS).
        stages: the pipeline (Serve deployment handles, or in-process stages).
        metrics: request and pipeline metrics (default: in-memory only).
        models_dir: folder of the packaged base tree models, whose files /tree-models/{filename} serves from
            disk (the same folder the model stage loads them from; other models come through the stages).

    Returns:
        The app.
    """
    metrics = metrics if metrics is not None else Metrics()
    jobs = JobTable(max_jobs=settings.max_jobs, max_running=settings.max_running_jobs, ttl_s=settings.job_ttl_s)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await jobs.close()  # replica shutdown: running jobs are cancelled, not orphaned

    app = FastAPI(
        lifespan=lifespan,
        title="Tree detection",
        version=__version__,
        description="Trees from aerial and satellite image tiles, and 3D tree scenes from those trees.",
        responses=_ERRORS,
    )
    app.state.jobs = jobs
    add_exception_handlers(app)
    mount_ui(app)  # the tuning page at /ui/ (static files; open without the API key)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["GET", "POST", "DELETE"]
        )
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)
    app.add_middleware(HeadersAndMetricsMiddleware, metrics=metrics)

    async def read_image(image: UploadFile) -> bytes:
        data = await image.read()
        if not data:
            raise InvalidImageError("the uploaded image is empty (0 bytes)")
        check_image_size(data, max_pixels=settings.max_image_pixels)  # 413 before any work starts
        return data

    async def run_detection(data: bytes, params: DetectionParams, progress: Progress) -> dict[str, Any]:
        return result_to_dict(await detect(stages, data, params, progress=progress, metrics=metrics))

    async def build_model(
        trees_payload: Any, base_model: str, progress: Progress, *, force_store: bool, fmt: str = "obj"
    ) -> tuple[InlineModel | StoredModel, int]:
        trees = check_trees(parse_trees(trees_payload, max_trees=settings.max_trees_limit))
        base = check_model_name(base_model)
        store = force_store or len(trees) > settings.large_model_threshold
        progress.stage = "storing" if store else "generating"
        started = time.perf_counter()
        built = await stages.build_model(trees, base, store=store, name=model_name(len(trees)), fmt=fmt)
        metrics.stage("generate", time.perf_counter() - started)
        return built, len(trees)

    def stored_body(request: Request, stored: StoredModel, total_trees: int) -> dict[str, Any]:
        url = stored.url if "://" in stored.url else str(request.url_for("download_model", filename=stored.name))
        return {
            "download_url": url,
            "filename": stored.name,
            "filesize_mb": round(stored.size_bytes / 1e6, 2),
            "total_trees": total_trees,
            "message": (
                f"The model has {total_trees:,} trees, more than {settings.large_model_threshold:,}: it was stored; "
                if total_trees > settings.large_model_threshold
                else f"The model ({total_trees:,} trees) was stored; "
            )
            + "download it from download_url before it expires.",
            "expires_in": stored.expires_in_s,
        }

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health() -> dict[str, Any]:
        """Liveness: 200 while the ingress answers (legacy body)."""
        return {"status": "ok", "service": SERVICE, "message": HEALTH_MESSAGE, "version": __version__}

    @app.get("/", tags=["service"])
    async def info() -> dict[str, Any]:
        """Service info: version, limits, storage, pipeline deployments, totals."""
        return {
            "service": SERVICE,
            "version": __version__,
            "docs": "/docs",
            "limits": {
                "max_upload_bytes": settings.max_upload_bytes,
                "max_image_pixels": settings.max_image_pixels,
                "max_trees_limit": settings.max_trees_limit,
                "large_model_threshold": settings.large_model_threshold,
                "max_jobs": settings.max_jobs,
                "max_running_jobs": settings.max_running_jobs,
            },
            "storage": settings.storage_kind,
            "pipeline": stages.describe(),
            "api_key_required": bool(settings.api_key),
            "totals": metrics.snapshot(),
        }

    @app.post(
        "/detect-trees",
        response_model=DetectResponse,
        tags=["detection"],
        responses={
            200: {
                "content": {GEOJSON_MEDIA_TYPE: {"schema": inline_schema(DetectGeoJSON)}},
                "description": "the trees: JSON (default), or GeoJSON with format=geojson or "
                "Accept: application/geo+json (in the CRS of origin_easting/origin_northing/epsg or of a "
                "GeoTIFF's tags, else in the image's metric frame, y up)",
            }
        },
    )
    async def detect_trees(
        request: Request, params: Params, image: ImageFile, output: Annotated[OutputOptions, Depends(output_options)]
    ) -> JSONResponse:
        """Detect trees in an image tile: positions and crown diameters in metres (JSON or GeoJSON)."""
        data = await read_image(image)
        shape = output.shaper(data, request.headers.get("accept"))
        detection = await run_detection(data, params, Progress())
        if shape is None:
            return JSONResponse(detection, headers=VARY_ACCEPT)
        return JSONResponse(shape(detection), media_type=GEOJSON_MEDIA_TYPE, headers=VARY_ACCEPT)

    @app.post(
        "/generate-model",
        tags=["3d"],
        responses={
            200: {
                "content": {
                    OBJ_MEDIA_TYPE: {},
                    ZIP_MEDIA_TYPE: {},
                    GLB_MEDIA_TYPE: {},
                    "application/json": {"schema": StoredModelResponse.model_json_schema()},
                },
                "description": "the scene (OBJ or zip up to LARGE_MODEL_THRESHOLD trees, GLB always) or, above "
                "the threshold, {download_url, ...}",
            }
        },
    )
    async def generate_model(
        request: Request,
        base_model: Annotated[str | None, Query(description="base tree model (default tree_lowpoly)")] = None,
        format: Annotated[  # noqa: A002
            Literal["obj", "zip", "glb"] | None,
            Query(description="obj (default; MTL at X-Mtl-Url), zip (OBJ + MTL), glb (binary glTF, instanced)"),
        ] = None,
    ) -> Response:
        """One 3D scene from a /detect-trees response (JSON body; extra fields ignored)."""
        try:
            payload = json.loads(await request.body())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidTreesError(f"the body is not valid JSON: {exc}") from None
        chosen = base_model or (payload.get("base_model") if isinstance(payload, dict) else None) or DEFAULT_MODEL
        if not isinstance(chosen, str):
            raise UnknownModelError("base_model must be a model name (a string)")
        fmt = format or (payload.get("format") if isinstance(payload, dict) else None) or "obj"
        if fmt not in FORMATS:
            raise InvalidTreesError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        built, total = await build_model(payload, chosen, Progress(), force_store=False, fmt=fmt)
        if isinstance(built, InlineModel):
            headers = {
                "Content-Disposition": f'attachment; filename="{built.filename}"',
                "X-Total-Trees": str(built.total_trees),
            }
            if built.mtl_name:
                headers["X-Mtl-Url"] = str(request.url_for("tree_model_file", filename=built.mtl_name))
            return Response(built.data, media_type=built.media_type, headers=headers)
        return JSONResponse(stored_body(request, built, total))

    @app.get("/tree-models", response_model=ModelList, tags=["3d"])
    async def tree_models(request: Request) -> dict[str, Any]:
        """The base tree models (packaged, then from the tree-models container), with their files' URLs."""
        return {
            "default": DEFAULT_MODEL,
            "models": [
                {
                    "name": model.name,
                    "obj_url": str(request.url_for("tree_model_file", filename=f"{model.name}.obj")),
                    "mtl_url": str(request.url_for("tree_model_file", filename=f"{model.name}.mtl")),
                    "source": model.source,
                }
                for model in await stages.list_models()
            ],
        }

    @app.get("/tree-models/{filename}", name="tree_model_file", tags=["3d"], response_class=FileResponse)
    async def tree_model_file(filename: str) -> Response:
        """A base tree model's OBJ or MTL file by name, e.g. tree_lowpoly.obj (packaged or blob model)."""
        stem, ext = split_model_file_name(filename)
        path = models_dir / f"{stem}.{ext}"
        media = OBJ_MEDIA_TYPE if ext == "obj" else MTL_MEDIA_TYPE
        if stem in list_models(models_dir) and path.is_file():
            return FileResponse(path, media_type=media, filename=f"{stem}.{ext}")
        # Not a packaged file: the model stage owns the storage, and answers 404 for a packaged model's
        # missing file (a package model wins a name clash there too).
        data = await stages.model_file(f"{stem}.{ext}")
        return Response(data, media_type=media, headers={"Content-Disposition": f'attachment; filename="{stem}.{ext}"'})

    @app.get("/download/{filename}", name="download_model", tags=["3d"], response_class=FileResponse)
    async def download_model(filename: str) -> FileResponse:
        """A stored large model (local storage only; with Azure the download_url points at the blob)."""
        if settings.storage_kind != "local":
            raise UnknownModelError("models are stored in Azure Blob Storage here: use the download_url you were given")
        stem = check_model_name(filename.rpartition(".")[0] or filename)
        ext = filename.rpartition(".")[2]
        path = settings.generated_models_dir / f"{stem}.{ext}"
        media = {"obj": OBJ_MEDIA_TYPE, "mtl": MTL_MEDIA_TYPE, "zip": ZIP_MEDIA_TYPE}
        if ext not in media or not path.is_file():
            raise UnknownModelError(f"no stored model {filename!r} (expired, or never made)")
        return FileResponse(path, media_type=media[ext], filename=path.name)

    @app.post("/jobs", status_code=202, response_model=JobCreated, tags=["jobs"])
    async def create_job(
        request: Request,
        params: Params,
        image: ImageFile,
        output: Annotated[OutputOptions, Depends(output_options)],
        kind: Annotated[Literal["detect", "detect-and-generate"], Form()] = "detect",
        base_model: Annotated[str, Form()] = DEFAULT_MODEL,
    ) -> dict[str, Any]:
        """Start a detection (or detection then a stored 3D model) in the background; poll GET /jobs/{id}.

        With format=geojson (and optionally origin_easting, origin_northing, epsg) the job's detection is GeoJSON,
        as /detect-trees gives it; the georeference is checked now, before the job starts.
        """
        data = await read_image(image)
        base = check_model_name(base_model)
        shape = output.shaper(data, None)  # the answer here is the job's id: only `format` chooses the result's form

        async def work(progress: Progress) -> dict[str, Any]:
            detection = await run_detection(data, params, progress)
            shown = detection if shape is None else shape(detection)
            if kind == "detect":
                return shown
            stored, total = await build_model(detection, base, progress, force_store=True)
            assert isinstance(stored, StoredModel)  # force_store: always stored
            return {"detection": shown, "model": stored_body(request, stored, total)}

        job = jobs.submit(kind, work)
        return {"id": job.id, "state": job.state, "status_url": str(request.url_for("get_job", job_id=job.id))}

    @app.get("/jobs/{job_id}", name="get_job", response_model=JobResponse, tags=["jobs"])
    async def get_job(job_id: str) -> JSONResponse:
        """A job's state and progress (tiles done / total, trees so far, stage), then its result or error."""
        return JSONResponse(jobs.get(job_id).as_dict())

    @app.delete("/jobs/{job_id}", response_model=JobResponse, tags=["jobs"])
    async def cancel_job(job_id: str) -> JSONResponse:
        """Cancel a running job (a finished one is returned as it is)."""
        return JSONResponse(jobs.cancel(job_id).as_dict())

    return app
