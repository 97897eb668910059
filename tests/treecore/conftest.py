"""Synthetic images with known trees: discs of known centre and diameter on a bare-soil background."""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pytest
import tifffile

SOIL_RGB = (150, 120, 90)  # hue ~15: outside the default vegetation hue range 35-85
CROWN_RGB = (40, 150, 40)  # hue 60, saturation ~185, value 150: inside it


@dataclass(frozen=True)
class Disc:
    """A drawn crown: centre pixel (col, row) and radius in pixels."""

    col: int
    row: int
    radius: int


def draw_scene(
    height: int,
    width: int,
    discs: Sequence[Disc],
    *,
    noise: int = 0,
    seed: int = 0,
    shade: bool = False,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB image with the discs; `shade` makes crowns brighter at their centre."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = SOIL_RGB
    for disc in discs:
        if shade:
            for k in range(disc.radius, 0, -1):
                level = 110 + int(100 * (1 - k / max(disc.radius, 1)))
                cv2.circle(image, (disc.col, disc.row), k, (30, level, 30), -1)
        else:
            cv2.circle(image, (disc.col, disc.row), disc.radius, CROWN_RGB, -1)
    if noise:
        rng = np.random.default_rng(seed)
        jitter = rng.integers(-noise, noise + 1, image.shape)
        image = np.clip(image.astype(np.int16) + jitter, 0, 255).astype(np.uint8)
    return image


@pytest.fixture
def scene() -> Callable[..., np.ndarray]:
    """The scene factory."""
    return draw_scene


def encode(image_rgb: np.ndarray, ext: str = ".png") -> bytes:
    """Encode an RGB image with OpenCV."""
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image_rgb, cv2.COLOR_RGB2BGR))
    assert ok
    return buf.tobytes()


#: GeoKeys of a projected GeoTIFF: GTModelType projected, GTRasterType PixelIsArea, ProjectedCSType UTM 33N.
UTM33_KEYS = {1024: 1, 1025: 1, 3072: 32633}


def geotiff(
    image_rgb: np.ndarray,
    *,
    scale: tuple[float, ...] | None = (0.1, 0.1, 0.0),
    tiepoint: tuple[float, ...] | None = (0, 0, 0, 500_000.0, 5_500_000.0, 0),
    keys: dict[int, int] | None = None,
    transformation: tuple[float, ...] | None = None,
    byteorder: str = "<",
    bigtiff: bool = False,
) -> bytes:
    """An RGB GeoTIFF written by tifffile with the given geo tags (keys default: UTM33_KEYS; {} writes none)."""
    keys = UTM33_KEYS if keys is None else keys
    tags = []
    if scale is not None:
        tags.append((33550, "d", len(scale), scale, True))
    if tiepoint is not None:
        tags.append((33922, "d", len(tiepoint), tiepoint, True))
    if transformation is not None:
        tags.append((34264, "d", len(transformation), transformation, True))
    if keys:
        directory = [1, 1, 0, len(keys)]
        for key, value in sorted(keys.items()):
            directory += [key, 0, 1, value]
        tags.append((34735, "H", len(directory), directory, True))
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image_rgb, photometric="rgb", byteorder=byteorder, bigtiff=bigtiff, extratags=tags)
    return buffer.getvalue()
