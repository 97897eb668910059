"""Resampling to a method's working ground resolution, by small rational factors so tiles stay aligned.

An image of m metres per pixel finer than the target is shrunk by `down`/`up` (up in 1..3): each pixel
repeated up x up times, then the area mean of down x down blocks, exact integer weights; of the factors
that reach the target, the one that lands closest to it. Images up to `coarsest` are kept as they are;
coarser ones are enlarged by a whole `up` = ceil(m / coarsest) (bilinear). Every working pixel is tied to
the same input pixels in any window that starts on a multiple of `down`, which is what makes tiled
detection exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from treecore.types import Window


@dataclass(frozen=True)
class Resampling:
    """Input-to-working scale: `down` input pixels become `up` working pixels (a fraction in lowest terms)."""

    down: int = 1
    up: int = 1

    def working_mpp(self, mpp: float) -> float:
        """Working metres per pixel for an input of `mpp` metres per pixel."""
        return mpp * self.down / self.up

    def working_size(self, width: int, height: int) -> tuple[int, int]:
        """Working (width, height) of the full image: partial blocks at the right and bottom are dropped."""
        return width // self.down * self.up, height // self.down * self.up

    def period(self, multiple: int = 1) -> int:
        """Input pixels between window starts whose working origin is a multiple of `multiple` working pixels."""
        return self.down * multiple // math.gcd(multiple, self.up)

    def aligned(self, window: Window, width: int, height: int, multiple: int = 1) -> Window:
        """`window` grown to whole blocks, within the full image's block-covered part (input pixels).

        The start is also put on `period(multiple)`, so it falls on a multiple of `multiple` working pixels.
        """
        d, start = self.down, self.period(multiple)
        right, bottom = width // d * d, height // d * d
        return Window(
            window.x0 // start * start,
            window.y0 // start * start,
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
        if self.down == 1:
            return cv2.resize(part, size, interpolation=cv2.INTER_LINEAR)
        if self.up > 1:
            # Exact replication, so the block means below have whole-number weights (no float positions).
            part = np.repeat(np.repeat(part, self.up, axis=0), self.up, axis=1)
        return cv2.resize(part, size, interpolation=cv2.INTER_AREA)

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
        For finer inputs the down/up (up in 1..3) whose working resolution is the smallest at or above
        `target`; up = ceil(mpp / coarsest) for coarser ones.
    """
    if mpp < target:
        best: tuple[float, int, int] | None = None
        for up in (1, 2, 3):
            down = max(up, math.ceil(target * up / mpp - 1e-9))
            if math.gcd(down, up) != 1:
                continue
            candidate = (mpp * down / up, up, down)
            if best is None or candidate < best:
                best = candidate
        assert best is not None
        return Resampling(down=best[2], up=best[1])
    if mpp > coarsest:
        return Resampling(up=math.ceil(mpp / coarsest - 1e-9))
    return Resampling()
