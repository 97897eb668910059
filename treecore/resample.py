"""Resampling to a method's working ground resolution, by whole-number factors so tiles stay aligned.

An image of m metres per pixel is shrunk by `down` = floor(target / m) (area mean of down x down blocks)
when it is finer than the target, kept as it is up to `coarsest`, and enlarged by `up` = ceil(m / coarsest)
(bilinear) beyond. Whole-number factors keep every working pixel tied to the same input pixels in any
window that starts on a multiple of `down`, which is what makes tiled detection exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from treecore.types import Window


@dataclass(frozen=True)
class Resampling:
    """Input-to-working scale: `down` input pixels per working pixel, or `up` working pixels per input pixel.

    At most one of the two is above 1.
    """

    down: int = 1
    up: int = 1

    def working_mpp(self, mpp: float) -> float:
        """Working metres per pixel for an input of `mpp` metres per pixel."""
        return mpp * self.down / self.up

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """Working (width, height) of the full image: partial blocks at the right and bottom are dropped."""
        return width // self.down * self.up, height // self.down * self.up

    def aligned(self, window: Window, width: int, height: int) -> Window:
        """`window` grown to whole blocks, within the full image's block-covered part (input pixels)."""
        d = self.down
        right, bottom = width // d * d, height // d * d
        return Window(
            window.x0 // d * d,
            window.y0 // d * d,
            min(right, -(-window.x1 // d) * d),
            min(bottom, -(-window.y1 // d) * d),
        )

    def to_working(self, part: np.ndarray) -> np.ndarray:
        """A window's pixels at the working resolution.

        Args:
            part: (h, w, C) uint8 input pixels of an aligned window (h, w multiples of `down`).

        Returns:
            (h / down * up, w / down * up, C) uint8.
        """
        h, w = part.shape[:2]
        if (self.down == 1 and self.up == 1) or h == 0 or w == 0:
            return part
        size = (w // self.down * self.up, h // self.down * self.up)
        if self.down > 1:
            return cv2.resize(part, size, interpolation=cv2.INTER_AREA)
        return cv2.resize(part, size, interpolation=cv2.INTER_LINEAR)

    def to_input(self, working: np.ndarray) -> np.ndarray:
        """Working pixel coordinates (pixel-centre convention) as input pixel coordinates.

        Args:
            working: (N, ...) float64, working pixels from the full image's top-left corner.

        Returns:
            Same shape, input pixels.
        """
        result: np.ndarray = working * (self.down / self.up)
        return result


def resampling_for(mpp: float, target: float, coarsest: float) -> Resampling:
    """The resampling that brings `mpp` metres per pixel near the working band [target / 2, coarsest].

    Args:
        mpp: input metres per pixel.
        target: working resolution for fine inputs, metres per pixel.
        coarsest: coarsest resolution run as it is, metres per pixel.

    Returns:
        down = floor(target / mpp) for finer inputs, up = ceil(mpp / coarsest) for coarser ones.
    """
    if mpp < target:
        return Resampling(down=max(1, math.floor(target / mpp + 1e-9)))
    if mpp > coarsest:
        return Resampling(up=math.ceil(mpp / coarsest - 1e-9))
    return Resampling()
