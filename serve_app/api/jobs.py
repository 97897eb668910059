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
from serve_app.api.rasters import form_georeference, raster_georeference, raster_params
from serve_app.formats import FORMATS, ModelFormat
from serve_app.jobs import JobKind, JobRecord, JobSpec
from serve_app.schemas import JobCreated, JobResponse
from treecore.basemodels import DEFAULT_MODEL, check_model_name

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
        georef = raster_georeference(source, output)
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
        georef = form_georeference(data, output) if geojson else None
        spec = JobSpec(kind, params, tuple(warnings), geojson, georef, base, model_format)
    job = await service.jobs.submit(spec, data)
    status_url = str(request.url_for("get_job", job_id=job.id))
    return {"id": job.id, "state": job.state, "status_url": status_url, "warnings": warnings}


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
