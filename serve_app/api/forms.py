"""The form fields of /detect-trees and /jobs: the legacy names and defaults, each bounded where it is parsed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import Depends, File, Form, UploadFile

from serve_app.bounds import MAX_DIAMETER_M, MAX_REAL_SIZE_M, MIN_REAL_SIZE_M
from treecore.types import DEFAULT_METHOD, METHODS, DetectionParams

if TYPE_CHECKING:
    Method = str
else:  # the form's choices are treecore's methods: a new method there is offered here unchanged
    Method = Literal[METHODS]


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
