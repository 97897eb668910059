"""Vegetation masks: which pixels are crown-coloured, by absolute HSV bounds."""

from __future__ import annotations

import cv2
import numpy as np

from treecore.types import DetectionParams

#: Pixels of context the clean-up needs on each side (3x3 open, then 3x3 close: four 1-pixel steps).
CLEANUP_RADIUS_PX = 4

_KERNEL_3X3 = np.ones((3, 3), np.uint8)


def to_hsv(image: np.ndarray) -> np.ndarray:
    """OpenCV HSV of an RGB image.

    Args:
        image: (H, W, 3) uint8 RGB.

    Returns:
        hsv: (H, W, 3) uint8; hue 0-179, saturation and value 0-255.
    """
    return cv2.cvtColor(image, cv2.COLOR_RGB2HSV)


def vegetation_mask(hsv: np.ndarray, params: DetectionParams) -> np.ndarray:
    """Pixels inside the HSV bounds, cleaned of specks and pinholes by a 3 x 3 open then close.

    The legacy backend did the same; the bounds are absolute, so a pixel's answer depends only on
    pixels within CLEANUP_RADIUS_PX of it, whatever window it is computed in.

    Args:
        hsv: (H, W, 3) uint8 OpenCV HSV.
        params: the hue/sat/val bounds.

    Returns:
        mask: (H, W) uint8, 255 for vegetation, 0 elsewhere.
    """
    lower = np.array([params.hue_min, params.sat_min, params.val_min], np.uint8)
    upper = np.array([params.hue_max, params.sat_max, params.val_max], np.uint8)
    mask = cv2.inRange(hsv, lower, upper)
    mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, _KERNEL_3X3)
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, _KERNEL_3X3)
