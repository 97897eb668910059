"""POST /detect-trees: an image and the legacy form fields in, the trees out (JSON or GeoJSON)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, UploadFile
from fastapi.responses import JSONResponse

from serve_app.api.context import ServiceDep
from serve_app.api.forms import ImageFile, Params, detection_params, field_names, form_warnings
from serve_app.api.negotiation import GEOJSON_MEDIA_TYPE, OutputOptions, detection_response, output_options
from serve_app.orchestration import Flows
from serve_app.progress import Progress
from serve_app.schemas import DetectGeoJSON, DetectResponse, inline_schema

router = APIRouter(tags=["detection"])

Output = Annotated[OutputOptions, Depends(output_options)]
#: The form fields /detect-trees reads; any other is named in the answer's warnings (and not refused).
DETECT_FIELDS = field_names(detection_params, output_options) | {"image"}


async def read_image(flows: Flows, image: UploadFile) -> bytes:
    """The upload's bytes, refused when empty or over the pixel limit before any work starts."""
    return flows.check_image(await image.read())


@router.post(
    "/detect-trees",
    response_model=DetectResponse,
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
    request: Request, service: ServiceDep, params: Params, image: ImageFile, output: Output
) -> JSONResponse:
    """Detect trees in an image tile: positions and crown diameters in metres (JSON or GeoJSON)."""
    data = await read_image(service.flows, image)
    shape = output.shaper(data, request.headers.get("accept"))
    warnings = await form_warnings(request, DETECT_FIELDS)
    detection = await service.flows.detect(data, params, Progress(), warnings=warnings)
    return detection_response(detection, shape)
