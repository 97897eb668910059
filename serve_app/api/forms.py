"""The form fields of /detect-trees and /jobs: the legacy names and defaults, each bounded where it is parsed."""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, File, Form, Request, UploadFile

from serve_app.bounds import MAX_DIAMETER_M, MAX_REAL_SIZE_M, MIN_REAL_SIZE_M
from treecore.errors import InvalidParametersError
from treecore.types import DEFAULT_METHOD, METHODS, DetectionParams

logger = logging.getLogger("serve_app")

if TYPE_CHECKING:
    Method = str
else:  # the form's choices are treecore's methods: a new method there is offered here unchanged
    Method = Literal[METHODS]


#: What cluster_threshold does (treecore.merge.seed_groups): joins one tree found twice, never neighbours.
_CLUSTER_THRESHOLD = "join a detection lying inside a larger crown and within this many metres of its centre (0: off)"


def _metres(description: str, *, ge: float | None = None, gt: float | None = None) -> Any:
    """A form field of metres: finite, with its lower bound, at most MAX_DIAMETER_M."""
    return Form(
        ge=ge, gt=gt, le=MAX_DIAMETER_M, allow_inf_nan=False, description=f"{description}, at most {MAX_DIAMETER_M:g}"
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
    cluster_threshold: Annotated[float, _metres(_CLUSTER_THRESHOLD, ge=0)] = 10.0,
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
_IMAGE = "PNG, JPEG or TIFF; 8 or 16 bit; gray, RGB, RGBA or palette"
ImageFile = Annotated[UploadFile, File(description=_IMAGE)]
OptionalImageFile = Annotated[UploadFile | None, File(description=f"{_IMAGE} (or give image_ref instead)")]
#: A raster in storage instead of an upload (serve_app.raster_source checks it).
ImageRef = Annotated[
    str | None,
    Form(
        max_length=2048,
        description="instead of image: a GeoTIFF (a Cloud-Optimized GeoTIFF is read window by window) in storage, "
        "as a blob name in the images container (AZURE_STORAGE_CONTAINER_IMAGES), or an HTTPS URL (a SAS URL) "
        "whose host is on RASTER_URL_HOSTS",
    ),
]


def one_image_input(image: UploadFile | None, image_ref: str | None) -> None:
    """Refuse a request with both an upload and a reference, or neither (422, saying which).

    Raises:
        InvalidParametersError: not exactly one of the two.
    """
    if image is not None and image_ref is not None:
        raise InvalidParametersError("give either image (an upload) or image_ref (a raster in storage), not both")
    if image is None and image_ref is None:
        raise InvalidParametersError(
            "no image: give image (an upload) or image_ref (a blob name in the images container, or an "
            "allow-listed HTTPS URL)"
        )


def field_names(*dependencies: Callable[..., Any]) -> frozenset[str]:
    """The request field names the parameters of these functions read (an alias where a parameter has one).

    Args:
        dependencies: FastAPI dependencies or endpoints whose parameters are form fields.

    Returns:
        The names.
    """
    names = set()
    for function in dependencies:
        for name, parameter in inspect.signature(function, eval_str=True).parameters.items():
            alias = next((getattr(m, "alias", None) for m in getattr(parameter.annotation, "__metadata__", ())), None)
            names.add(alias or name)
    return frozenset(names)


def ignored_warnings(given: Iterable[str], known: Iterable[str], where: str) -> list[str]:
    """One warning per field that no parameter reads (legacy clients may send extras: they are not refused).

    Args:
        given: the field names the client sent.
        known: the field names the route reads.
        where: what the fields are, e.g. "form field" or "tree field".

    Returns:
        e.g. ["ignored form field 'realwidth' (not a field of this route; did you mean 'real_width'?)"].
    """
    known = sorted(set(known))
    warnings = []
    for name in sorted(set(given) - set(known)):
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        warnings.append(f"ignored {where} {name[:80]!r} (not a field of this route{hint})")
    return warnings


def log_warnings(request: Request, warnings: list[str]) -> list[str]:
    """Log a request's warnings once (INFO: the caller's input, not the service's fault) and return them."""
    if warnings:
        logger.info("%s %s: %s", request.method, request.url.path, "; ".join(warnings))
    return warnings


async def form_warnings(request: Request, known: frozenset[str]) -> list[str]:
    """The warnings of a multipart request's form fields that this route does not read (logged once).

    Args:
        request: the request (its form is parsed already: Starlette keeps it).
        known: the route's field names (`field_names`).

    Returns:
        The warnings (empty when every field is read).
    """
    form: Mapping[str, Any] = await request.form()
    return log_warnings(request, ignored_warnings(form.keys(), known, "form field"))
