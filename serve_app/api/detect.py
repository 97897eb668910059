"""POST /detect-trees: an image and the legacy form fields in, the trees out (JSON or GeoJSON)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import JSONResponse

from serve_app.api.context import ServiceDep
from serve_app.api.forms import (
    ImageRef,
    OptionalImageFile,
    Params,
    detection_params,
    field_names,
    form_warnings,
    one_image_input,
)
from serve_app.api.negotiation import GEOJSON_MEDIA_TYPE, OutputOptions, detection_response, output_options
from serve_app.api.rasters import raster_georeference, raster_params
from serve_app.jobs import geojson_detection
from serve_app.orchestration import Flows
from serve_app.progress import Progress
from serve_app.schemas import DetectGeoJSON, DetectResponse, inline_schema
from treecore.errors import ImageTooLargeError
from treecore.types import DetectionParams

router = APIRouter(tags=["detection"])

Output = Annotated[OutputOptions, Depends(output_options)]
#: The form fields /detect-trees reads; any other is named in the answer's warnings (and not refused).
DETECT_FIELDS = field_names(detection_params, output_options) | {"image", "image_ref"}


async def read_image(flows: Flows, image: UploadFile) -> bytes:
    """The upload's bytes, refused when empty or over the pixel limit before any work starts."""
    return flows.check_image(await image.read())


@router.post(
    "/detect-trees",
    response_model=DetectResponse,
    openapi_extra={"requestBody": {"required": True}},
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
    request: Request,
    service: ServiceDep,
    params: Params,
    output: Output,
    image: OptionalImageFile = None,
    image_ref: ImageRef = None,
) -> JSONResponse:
    """Detect trees in an image tile: positions and crown diameters in metres (JSON or GeoJSON).

    The image is an upload (`image`) or a GeoTIFF in storage (`image_ref`, as POST /jobs takes it, up to
    MAX_IMAGE_PIXELS here: larger rasters belong in POST /jobs), exactly one of the two.
    """
    one_image_input(image, image_ref)
    if image_ref is not None:
        return await _detect_reference(request, service, params, output, image_ref)
    assert image is not None  # one_image_input
    data = await read_image(service.flows, image)
    shape = output.shaper(data, request.headers.get("accept"))
    warnings = await form_warnings(request, DETECT_FIELDS)
    detection = await service.flows.detect(data, params, Progress(), warnings=warnings)
    return detection_response(detection, shape)


async def _detect_reference(
    request: Request, service: ServiceDep, params: DetectionParams, output: OutputOptions, image_ref: str
) -> JSONResponse:
    """/detect-trees over a raster in storage: checked and planned from its header, read window by window."""
    flows = service.flows
    source = await flows.open_raster(image_ref)
    pixels, limit = source.header.width * source.header.height, flows.settings.max_image_pixels
    if pixels > limit:
        raise ImageTooLargeError(
            f"the raster has {pixels:,} pixels, more than {limit:,} (MAX_IMAGE_PIXELS) for one request: "
            "send it to POST /jobs, which reads any size window by window"
        )
    params, notes = raster_params(params, source, set((await request.form()).keys()))
    geojson = output.geojson(request.headers.get("accept"))
    georef = raster_georeference(source, output, geojson=geojson)
    warnings = [*await form_warnings(request, DETECT_FIELDS), *notes]
    detection = await flows.detect_raster(source, params, Progress(), warnings=warnings)
    return detection_response(detection, (lambda found: geojson_detection(found, georef)) if geojson else None)
