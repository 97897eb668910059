"""Background jobs: POST /jobs (a detection, or detection then a stored scene), GET and DELETE /jobs/{id}."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import JSONResponse

from serve_app.api.context import ServiceDep
from serve_app.api.detect import read_image
from serve_app.api.forms import (
    ImageRef,
    OptionalImageFile,
    Params,
    detection_params,
    field_names,
    form_warnings,
    one_image_input,
)
from serve_app.api.negotiation import OutputOptions, output_options, stored_body
from serve_app.formats import FORMATS, ModelFormat
from serve_app.jobs import JobKind, JobRecord, JobSpec
from serve_app.schemas import JobCreated, JobResponse
from serve_app.stages import RasterSource
from treecore.basemodels import DEFAULT_MODEL, check_model_name
from treecore.errors import InvalidGeoreferenceError
from treecore.geo import resolve_georeference
from treecore.types import DetectionParams, Georeference

router = APIRouter(tags=["jobs"])

Output = Annotated[OutputOptions, Depends(output_options)]
KIND_DESCRIPTION = "detect (the default): the detection only; detect-and-generate: the detection, then a stored scene"
MODEL_FORMAT_DESCRIPTION = (
    "detect-and-generate: the scene's format, as /generate-model's format: obj (default; its MTL beside it, at "
    "mtl_url), zip (OBJ + MTL) or glb. A job's scene is always stored and linked, whatever its size"
)


# Every field is optional to FastAPI (an upload or a reference), but a body there must be: say so in the schema.
@router.post("/jobs", status_code=202, response_model=JobCreated, openapi_extra={"requestBody": {"required": True}})
async def create_job(
    request: Request,
    service: ServiceDep,
    params: Params,
    output: Output,
    image: OptionalImageFile = None,
    image_ref: ImageRef = None,
    kind: Annotated[JobKind, Form(description=KIND_DESCRIPTION)] = "detect",
    base_model: Annotated[str, Form(description="detect-and-generate: the base tree model")] = DEFAULT_MODEL,
    model_format: Annotated[ModelFormat, Form(description=MODEL_FORMAT_DESCRIPTION)] = FORMATS[0],
) -> dict[str, Any]:
    """Start a detection (kind=detect, the default) or a detection then a stored 3D scene (kind=detect-and-generate,
    in model_format) in the background; poll GET /jobs/{id}.

    The image is an upload (`image`) or a reference to a GeoTIFF in storage (`image_ref`: a blob name in the
    images container, or an allow-listed HTTPS URL), exactly one of the two. A referenced raster is read window
    by window by the Detectors, never whole; its georeference gives real_width and real_height (and the
    GeoJSON's coordinates). With format=geojson (and optionally origin_easting, origin_northing, epsg) the job's
    detection is GeoJSON, as /detect-trees gives it; the georeference is checked now, before the job starts.
    Form fields the job does not read are named in the answer's warnings (and in the detection's).
    """
    one_image_input(image, image_ref)
    base = check_model_name(base_model)
    warnings = await form_warnings(request, JOB_FIELDS)
    if image_ref is not None:
        source = await service.flows.open_raster(image_ref)
        params, notes = raster_params(params, source, set((await request.form()).keys()))
        georef = _raster_georeference(source, output)
        spec = JobSpec(kind, params, (*warnings, *notes), georef is not None or output.format == "geojson", georef)
        spec = dataclasses.replace(spec, base_model=base, model_format=model_format, raster=source)
        warnings = [*warnings, *notes]
        data = b""
    else:
        assert image is not None  # one_image_input
        data = await read_image(service.flows, image)
        # The answer here is the job's id: only `format` chooses the result's form. The shaper checks the
        # georeference now; the job gets it resolved, as data (the job runs in another process).
        geojson = output.shaper(data, None) is not None
        georef = _georeference(data, output) if geojson else None
        spec = JobSpec(kind, params, tuple(warnings), geojson, georef, base, model_format)
    job = await service.jobs.submit(spec, data)
    status_url = str(request.url_for("get_job", job_id=job.id))
    return {"id": job.id, "state": job.state, "status_url": status_url, "warnings": warnings}


def _georeference(data: bytes, output: OutputOptions) -> Georeference | None:
    return resolve_georeference(
        data, origin_easting=output.origin_easting, origin_northing=output.origin_northing, epsg=output.epsg
    )


def raster_params(
    params: DetectionParams, source: RasterSource, given: set[str]
) -> tuple[DetectionParams, tuple[str, ...]]:
    """The detection parameters of a referenced raster: its georeference's metres per pixel give real_width and
    real_height (the raster wins over the form's fields: a warning says so when they were given); a raster
    without one keeps the form's (or their defaults), and a warning says that too.

    Returns:
        (the parameters, the warnings).
    """
    header, sizes = source.header, [name for name in ("real_width", "real_height") if name in given]
    if header.metres_per_pixel is None:
        return params, (
            f"the raster has no georeference: real_width {params.real_width:g} m and real_height "
            f"{params.real_height:g} m ({'as given' if sizes else 'the defaults'}) set its scale",
        )
    mx, my = header.metres_per_pixel
    width_m, height_m = header.width * mx, header.height * my
    notes: tuple[str, ...] = ()
    if sizes and not (
        abs(params.real_width - width_m) <= 1e-6 * width_m and abs(params.real_height - height_m) <= 1e-6 * height_m
    ):
        notes = (
            f"{' and '.join(sizes)} ignored: the raster's georeference gives {width_m:g} m x {height_m:g} m "
            f"({mx:g} x {my:g} m per pixel), which wins",
        )
    return dataclasses.replace(params, real_width=width_m, real_height=height_m), notes


def _raster_georeference(source: RasterSource, output: OutputOptions) -> Georeference | None:
    """A referenced raster's GeoJSON georeference (None: JSON answer): the form's origin and EPSG when given,
    else the raster's own (epsg alone names or corrects its CRS), checked now."""
    if output.format != "geojson":
        if output.georeferenced():
            raise InvalidGeoreferenceError(
                "origin_easting, origin_northing and epsg place the GeoJSON output: add format=geojson"
            )
        return None
    if output.origin_easting is not None or output.origin_northing is not None:
        return _georeference(b"", output)
    return source.header.georeference(epsg=output.epsg)


#: The form fields POST /jobs reads; any other is named in the answer's warnings (and not refused).
JOB_FIELDS = field_names(detection_params, output_options) | {
    "image",
    "image_ref",
    "kind",
    "base_model",
    "model_format",
}


def job_body(request: Request, job: JobRecord) -> dict[str, Any]:
    """The GET /jobs/{id} body of a record; a stored scene's links are made here, from this request's base URL
    (whichever ingress replica answers), its expiry from when it was stored."""
    body: dict[str, Any] = {
        "id": job.id,
        "kind": job.kind,
        "state": job.state,
        "stage": job.progress["stage"],
        "progress": job.progress,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
    }
    result = job.result
    if result is not None:
        if result.scene is None:
            body["result"] = result.detection
        else:
            model = stored_body(request, result.scene, now=result.stored_at)
            body["result"] = {"detection": result.detection, "model": model}
    if job.error is not None:
        body["error"] = job.error
    return body


@router.get("/jobs/{job_id}", name="get_job", response_model=JobResponse)
async def get_job(request: Request, job_id: str, service: ServiceDep) -> JSONResponse:
    """A job's state and progress (tiles done / total, trees so far, stage), then its result or error."""
    return JSONResponse(job_body(request, await service.jobs.get(job_id)))


@router.delete("/jobs/{job_id}", response_model=JobResponse)
async def cancel_job(request: Request, job_id: str, service: ServiceDep) -> JSONResponse:
    """Cancel a running job and answer the state it settled to: "cancelled" (or, when it ended meanwhile,
    "succeeded" or "failed"); a finished job is returned as it is."""
    return JSONResponse(job_body(request, await service.jobs.cancel(job_id)))
