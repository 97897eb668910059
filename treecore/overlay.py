"""Overlay: detected crowns drawn on the image, so a person can judge the result by eye."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from treecore.types import Tree

_CROWN_RGB = (255, 40, 40)
_CENTRE_RGB = (255, 255, 0)


def draw_overlay(image: np.ndarray, trees: Sequence[Tree], *, mask: np.ndarray | None = None) -> np.ndarray:
    """Draw each crown as a circle with a centre mark; optionally tint the vegetation mask.

    Args:
        image: (H, W, 3) uint8 RGB (not modified).
        trees: trees in full-image pixels.
        mask: optional (H, W) uint8 vegetation mask, tinted blue where set.

    Returns:
        A new (H, W, 3) uint8 RGB image.
    """
    out = image.copy()
    if mask is not None:
        tint = out.copy()
        tint[mask > 0] = (0, 90, 255)
        out = cv2.addWeighted(out, 0.7, tint, 0.3, 0)
    thickness = max(1, round(max(image.shape[:2]) / 800))
    for tree in trees:
        centre = (int(round(tree.pixel_x - 0.5)), int(round(tree.pixel_y - 0.5)))
        radius = max(1, int(round(tree.pixel_diameter / 2)))
        cv2.circle(out, centre, radius, _CROWN_RGB, thickness, cv2.LINE_AA)
        cv2.drawMarker(out, centre, _CENTRE_RGB, cv2.MARKER_CROSS, max(3, radius // 3), thickness)
    return out
