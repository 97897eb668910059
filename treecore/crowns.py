"""Crowns of one image window: legacy connected regions, or tree tops that split touching crowns.

Both methods work on a window of the full image and report crowns in full-image pixels. Every
quantity is local with a bounded radius (see `context_px`), thresholds are absolute, and ties are
broken by full-image position, so a crown comes out identical in any window that holds its context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from treecore.merge import close_pairs
from treecore.types import DetectionParams, Window
from treecore.vegetation import CLEANUP_RADIUS_PX

#: Tree-top smoothing: Gaussian sigma as a fraction of the smallest crown diameter.
SMOOTHING_PER_MIN_DIAMETER = 0.125
#: Two tree tops closer than this fraction of the smallest crown diameter are one tree.
PEAK_SPACING_PER_MIN_DIAMETER = 0.5
#: Grey levels added to a tree top's score per pixel of depth inside the vegetation.
DEPTH_WEIGHT = 0.5
#: Safety factor on the crown-radius part of the halo.
_CELL_MARGIN = 1.1


@dataclass(frozen=True)
class Crowns:
    """Crowns found in a window, in full-image pixels.

    centres: (N, 2) float64 [x, y], pixel-centre convention (pixel (row, col) spans col..col+1).
    diameters: (N,) float64 equivalent diameters, pixels.
    """

    centres: np.ndarray
    diameters: np.ndarray


@dataclass(frozen=True)
class Scale:
    """Pixel sizes derived from the parameters and the full image size.

    metres_per_pixel: geometric mean of x and y (pixels are near square in practice).
    """

    metres_per_pixel: float
    min_diameter_px: float
    max_diameter_px: float

    @property
    def max_radius_px(self) -> int:
        """Largest crown radius, whole pixels (rounded up)."""
        return int(math.ceil(self.max_diameter_px / 2))

    @property
    def smoothing_sigma_px(self) -> float:
        """Gaussian sigma used to find tree tops, pixels."""
        return max(0.5, SMOOTHING_PER_MIN_DIAMETER * max(self.min_diameter_px, 1.0 / self.metres_per_pixel))

    @property
    def peak_radius_px(self) -> int:
        """Radius of the non-maximum suppression disc, pixels (at least 1)."""
        spacing = PEAK_SPACING_PER_MIN_DIAMETER * max(self.min_diameter_px, 1.0 / self.metres_per_pixel)
        return max(1, int(round(spacing)))


def scale_for(params: DetectionParams, shape: tuple[int, ...]) -> Scale:
    """Pixel scale of a full image of `shape` under `params`.

    Args:
        params: detection parameters (real size and diameters in metres).
        shape: (H, W, ...) of the FULL image.

    Returns:
        The Scale.
    """
    height, width = shape[0], shape[1]
    mpp = math.sqrt((params.real_width / width) * (params.real_height / height))
    return Scale(mpp, params.min_diameter / mpp, params.max_diameter / mpp)


def context_px(params: DetectionParams, shape: tuple[int, ...]) -> int:
    """Pixels of context around a tile's core that make its crowns exact (the halo width).

    Legacy: a whole crown plus the mask clean-up. Tree tops: a crown's centre is its top, tops up to
    two largest radii away compete for its pixels, and each of those tops needs its smoothing and
    peak radius: two radii (with a safety factor) plus the marker context.

    Args:
        params: detection parameters.
        shape: (H, W, ...) of the FULL image.

    Returns:
        Halo width, pixels.
    """
    scale = scale_for(params, shape)
    if params.method == "legacy":
        return int(math.ceil(scale.max_diameter_px)) + CLEANUP_RADIUS_PX + 3
    marker_context = (
        CLEANUP_RADIUS_PX
        + max(_gaussian_radius(scale.smoothing_sigma_px), int(1.05 * scale.max_radius_px) + 2)
        + scale.peak_radius_px
        + 2
    )
    return int(math.ceil(_CELL_MARGIN * 2 * scale.max_radius_px)) + marker_context + 2


def _gaussian_radius(sigma: float) -> int:
    return int(math.ceil(3 * sigma))


def _empty() -> Crowns:
    return Crowns(np.zeros((0, 2), np.float64), np.zeros((0,), np.float64))


def first_of_equal_peaks(rows: np.ndarray, cols: np.ndarray, score: np.ndarray, peak: int) -> np.ndarray:
    """Which local maxima to keep: of equal maxima within one peak square (a plateau), the first.

    The first in full-image (row, col) order, so the answer depends only on the candidates nearby,
    never on the window.

    Args:
        rows: (N,) int row of each candidate, full-image (or any fixed-origin) pixels.
        cols: (N,) int column of each candidate.
        score: (N,) the candidates' scores.
        peak: half-side of the peak square, pixels.

    Returns:
        (N,) bool, True for the candidates kept.
    """
    a, b = close_pairs(np.stack([cols, rows], axis=1).astype(np.float64), peak * math.sqrt(2) + 1)
    tie = (np.abs(rows[a] - rows[b]) <= peak) & (np.abs(cols[a] - cols[b]) <= peak) & (score[a] == score[b])
    a, b = a[tie], b[tie]
    later = np.where((rows[a] > rows[b]) | ((rows[a] == rows[b]) & (cols[a] > cols[b])), a, b)
    keep = np.ones(rows.size, bool)
    keep[later] = False
    return keep


def legacy_crowns(mask: np.ndarray, window: Window, image_window: Window, scale: Scale) -> Crowns:
    """Connected vegetation regions as crowns (the legacy algorithm), sized by equivalent diameter.

    A region whose bounding box is wider or taller than the largest crown is not a crown (a hedge or a
    forest); this also makes the answer independent of the window: a region reaching within the
    clean-up radius of a cut edge is incomplete here, and too large in the full image.

    Args:
        mask: (h, w) uint8 vegetation mask of `window`.
        window: where the mask lies in the full image.
        image_window: the full image's extent (edges that are real, not cuts).
        scale: pixel scale.

    Returns:
        Crowns (all of the window; ownership is decided by the caller).
    """
    count, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8, ltype=cv2.CV_32S)
    if count <= 1:
        return _empty()
    x0, y0, w, h, area = (stats[1:, i].astype(np.int64) for i in range(5))
    margin = CLEANUP_RADIUS_PX + 1
    cut_left = window.x0 > image_window.x0
    cut_top = window.y0 > image_window.y0
    cut_right = window.x1 < image_window.x1
    cut_bottom = window.y1 < image_window.y1
    incomplete = (
        (cut_left & (x0 < margin))
        | (cut_top & (y0 < margin))
        | (cut_right & (x0 + w > mask.shape[1] - margin))
        | (cut_bottom & (y0 + h > mask.shape[0] - margin))
    )
    keep = ~incomplete & (np.maximum(w, h) <= scale.max_diameter_px)
    if not keep.any():
        return _empty()
    centres = _region_centres(centroids[1:][keep], area[keep], window)
    diameters = np.sqrt(4.0 * area[keep] / math.pi)
    return Crowns(centres, diameters.astype(np.float64))


def _region_centres(local: np.ndarray, area: np.ndarray, window: Window) -> np.ndarray:
    # OpenCV's centroids are window-relative floats; recover the exact integer coordinate sums and
    # shift them by whole pixels, so a centre is bit-identical whatever window it was found in.
    sums = np.round(local * area[:, None]).astype(np.int64)
    sums += area[:, None] * np.array([window.x0, window.y0], np.int64)
    centres: np.ndarray = sums / area[:, None] + 0.5
    return centres


def tree_top_crowns(hsv: np.ndarray, mask: np.ndarray, window: Window, scale: Scale) -> Crowns:
    """Crowns grown from tree tops, so touching crowns come out as separate trees.

    Tree tops are the brightest points of the smoothed vegetation (sunlit crown tops; the mask's value
    channel, zero off the mask), one per disc of `peak_radius_px`. Each vegetation pixel within the
    largest crown radius belongs to its nearest top; a crown's centre is its top and its diameter the
    equivalent diameter of its pixels.

    Args:
        hsv: (h, w, 3) uint8 OpenCV HSV of `window`.
        mask: (h, w) uint8 vegetation mask of `window`.
        window: where the arrays lie in the full image.
        scale: pixel scale.

    Returns:
        Crowns of every top found in the window (ownership is decided by the caller).
    """
    veg = mask > 0
    if not veg.any():
        return _empty()
    value = np.where(veg, hsv[:, :, 2], 0).astype(np.float32)
    sigma = scale.smoothing_sigma_px
    radius = _gaussian_radius(sigma)
    smooth = cv2.GaussianBlur(value, (2 * radius + 1, 2 * radius + 1), sigma, borderType=cv2.BORDER_REFLECT)
    # Depth inside the vegetation (capped at the largest crown radius) breaks flat crowns' plateaus
    # towards their middle; brightness still decides in textured canopy.
    depth = np.minimum(cv2.distanceTransform(mask, cv2.DIST_L2, cv2.DIST_MASK_5), scale.max_radius_px)
    smooth = smooth + DEPTH_WEIGHT * depth
    peak = scale.peak_radius_px
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * peak + 1, 2 * peak + 1))
    tops = veg & (smooth >= cv2.dilate(smooth, square, borderType=cv2.BORDER_CONSTANT, borderValue=-1.0))
    top_rows, top_cols = np.nonzero(tops)
    if top_rows.size == 0:
        return _empty()
    keep = first_of_equal_peaks(top_rows, top_cols, smooth[top_rows, top_cols], peak)
    return _grow_cells(veg, top_rows[keep], top_cols[keep], window, scale)


def _grow_cells(veg: np.ndarray, top_rows: np.ndarray, top_cols: np.ndarray, window: Window, scale: Scale) -> Crowns:
    # Exact nearest-top assignment within the largest crown radius. Ties go to the top with the
    # smaller full-image (row, col), which no window shift can change.
    r_max = scale.max_radius_px
    h, w = veg.shape
    unreached = np.int32(r_max * r_max + 1)
    best = np.full((h, w), unreached, np.int32)
    owner = np.full((h, w), -1, np.int32)
    order = np.lexsort((top_cols, top_rows))
    offsets = np.arange(-r_max, r_max + 1, dtype=np.int32)
    for index in order:
        r, c = int(top_rows[index]), int(top_cols[index])
        ra, rb = max(0, r - r_max), min(h, r + r_max + 1)
        ca, cb = max(0, c - r_max), min(w, c + r_max + 1)
        dy = offsets[ra - r + r_max : rb - r + r_max, None]
        dx = offsets[ca - c + r_max : cb - c + r_max][None, :]
        d2 = (dy * dy + dx * dx).astype(np.int32)
        region_best = best[ra:rb, ca:cb]
        closer = d2 < region_best  # strict: an earlier (smaller row, col) top keeps a tie
        region_best[closer] = d2[closer]
        owner[ra:rb, ca:cb][closer] = index
    cells = owner[veg]
    count = top_rows.size
    area = np.bincount(cells[cells >= 0], minlength=count).astype(np.int64)
    keep = area > 0
    centres = np.stack([top_cols[keep] + window.x0 + 0.5, top_rows[keep] + window.y0 + 0.5], axis=1)
    diameters = np.sqrt(4.0 * area[keep] / math.pi)
    return Crowns(centres.astype(np.float64), diameters.astype(np.float64))
