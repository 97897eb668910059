"""Learned tree centres: a tiny fully convolutional network (ONNX, run by cv2.dnn) maps RGB to a heatmap.

The network (treecore/models/tree_centres.onnx, made by training/train_heatmap.py) sees the image at its
working resolution (see `WORKING_TARGET_M`) and gives three maps on a grid of every second working pixel
(a stride-2 first layer): a tree-centre logit, the crown diameter (working pixels / 10) and a dead-tree
logit. A tree is a local maximum of the centre logit above `PEAK_LOGIT`; its diameter is read at the peak.

The form fields keep their meaning: a crown is kept when at least `COLOUR_FRACTION` of the pixels of its
central square (half its diameter a side) lie in the HSV range, and its diameter in
[min_diameter, max_diameter] (checked by the caller). A crown the network calls dead (a grey snag: no
hue, little saturation) is judged by the value bounds alone, so snags can be found with a green hue range.

Every quantity has a bounded radius (`context_px`), thresholds are absolute, and equal peaks are broken by
full-image position, so a crown comes out bit-identical in any window holding its context.
"""

from __future__ import annotations

import math
import threading
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from treecore.crowns import Crowns, first_of_equal_peaks
from treecore.resample import Resampling, resampling_for
from treecore.types import DetectionParams, Window

#: The packaged network.
MODEL_PATH = Path(__file__).parent / "models" / "tree_centres.onnx"
#: Fine inputs are shrunk by a whole factor towards this working resolution (0.1 m -> 0.4 m), metres per pixel.
WORKING_TARGET_M = 0.4
#: Inputs up to this resolution run as they are; coarser ones are enlarged by a whole factor, metres per pixel.
WORKING_COARSEST_M = 0.6
#: The network's output grid: one value per NET_STRIDE x NET_STRIDE working pixels (its first layer's stride).
NET_STRIDE = 2
#: Receptive-field radius of the network, working pixels: 1 (the stem) + 2 x (2 + 4 + 8) (dilated layers).
NET_RADIUS_PX = 29
#: Input normalisation the network was trained with: (rgb - mean) / std.
INPUT_MEAN, INPUT_STD = 127.5, 64.0
#: Diameter channel unit, working pixels.
SIZE_UNIT_PX = 10.0
#: A tree centre: a local maximum of the centre logit at least this high.
PEAK_LOGIT = -1.0
#: Two peaks closer than this are one tree, metres (at least one working pixel).
PEAK_SPACING_M = 2.0
#: A crown is dead (judged by its value alone) when its dead logit is above this.
DEAD_LOGIT = 0.0
#: Share of a crown's central square that must lie in the colour range.
COLOUR_FRACTION = 0.1
#: Rows of a working strip fed to the network at once: bounds memory (16 float32 channels per pixel).
STRIP_PIXELS = 1_000_000


class HeatmapModel:
    """The network, loaded once per process; `maps` may be called from several threads."""

    def __init__(self, path: Path) -> None:
        """Read the ONNX file at `path` with cv2.dnn."""
        self.path = path
        self._net = cv2.dnn.readNetFromONNX(str(path))
        # Winograd convolutions compute a pixel differently depending on its place in a block: off, so a
        # pixel's value never depends on where the window starts.
        self._net.enableWinograd(False)
        self._lock = threading.Lock()

    def maps(self, rgb: np.ndarray) -> np.ndarray:
        """The network's output for a working-resolution image.

        Args:
            rgb: (h, w, 3) uint8 RGB at the working resolution.

        Returns:
            (3, ceil(h / NET_STRIDE), ceil(w / NET_STRIDE)) float32: centre logit, diameter / SIZE_UNIT_PX
            (working pixels), dead logit; value [:, i, j] belongs to working pixel (NET_STRIDE i, NET_STRIDE j).
        """
        h, w = rgb.shape[:2]
        s = NET_STRIDE
        out = np.empty((3, -(-h // s), -(-w // s)), np.float32)
        margin = -(-NET_RADIUS_PX // s) * s  # whole output rows of context above and below each strip
        rows = max(4 * margin, STRIP_PIXELS // max(w, 1) // s * s)
        for y0 in range(0, h, rows):
            y1 = min(h, y0 + rows)
            a, b = max(0, y0 - margin), min(h, y1 + margin)
            blob = cv2.dnn.blobFromImage(rgb[a:b], 1.0 / INPUT_STD, mean=(INPUT_MEAN,) * 3)
            with self._lock:
                self._net.setInput(blob)
                result = self._net.forward()
            first = (y0 - a) // s
            out[:, y0 // s : -(-y1 // s)] = result[0, :, first : first + -(-y1 // s) - y0 // s]
        return out


@lru_cache(maxsize=1)
def packaged_model() -> HeatmapModel:
    """The network shipped in the package (loaded on first use)."""
    return HeatmapModel(MODEL_PATH)


def resampling(params: DetectionParams, shape: tuple[int, ...]) -> Resampling:
    """The working resampling for a full image of `shape` under `params`."""
    mpp = math.sqrt((params.real_width / shape[1]) * (params.real_height / shape[0]))
    return resampling_for(mpp, WORKING_TARGET_M, WORKING_COARSEST_M)


def _working_scale(params: DetectionParams, shape: tuple[int, ...]) -> tuple[Resampling, float, int, int]:
    rs = resampling(params, shape)
    mpp = math.sqrt((params.real_width / shape[1]) * (params.real_height / shape[0]))
    work_mpp = rs.working_mpp(mpp)
    peak = max(1, int(round(PEAK_SPACING_M / (work_mpp * NET_STRIDE))))  # output-grid pixels
    colour_half = max(1, int(math.ceil(params.max_diameter / work_mpp / 4)))
    return rs, work_mpp, peak, colour_half


def context_px(params: DetectionParams, shape: tuple[int, ...]) -> int:
    """Halo width, input pixels, that makes the crowns of a tile's core exact.

    A peak needs the logits within two peak radii (its own square and those of equal peaks it competes
    with), each logit the network's receptive field, and the colour check its square; plus one block
    for aligning the window to the resampling grid and one pixel for bilinear enlarging.
    """
    rs, _, peak, colour_half = _working_scale(params, shape)
    working = NET_RADIUS_PX + NET_STRIDE * (2 * peak + 2) + max(colour_half, 1) + 2
    return -(-working * rs.down // rs.up) + rs.period(NET_STRIDE) + 1


def heatmap_crowns(
    image: np.ndarray, window: Window, params: DetectionParams, model: HeatmapModel | None = None
) -> Crowns:
    """Crowns whose centres the network finds in `window`, colour-checked, in full-image pixels.

    Args:
        image: (H, W, 3) uint8 RGB, the FULL image (only the window, grown to whole blocks, is read).
        window: the part to read.
        params: detection parameters.
        model: the network (default: the packaged one).

    Returns:
        Crowns (diameters in input pixels; the diameter range is applied by the caller).
    """
    net = model or packaged_model()
    height, width = image.shape[:2]
    rs, work_mpp, peak, colour_half = _working_scale(params, image.shape)
    read = rs.aligned(window, width, height, NET_STRIDE)
    if read.width <= 0 or read.height <= 0:
        return _empty()
    rgb = rs.to_working(image[read.y0 : read.y1, read.x0 : read.x1])
    maps = net.maps(rgb)
    logit = maps[0]
    square = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * peak + 1, 2 * peak + 1))
    neighbourhood = cv2.dilate(logit, square, borderType=cv2.BORDER_CONSTANT, borderValue=-1e9)
    rows, cols = np.nonzero((logit >= PEAK_LOGIT) & (logit >= neighbourhood))
    if rows.size == 0:
        return _empty()
    x0w, y0w = read.x0 // rs.down * rs.up, read.y0 // rs.down * rs.up  # multiples of NET_STRIDE
    s = NET_STRIDE
    keep = first_of_equal_peaks(rows + y0w // s, cols + x0w // s, logit[rows, cols], peak)
    rows, cols = rows[keep], cols[keep]
    diameter_w = np.maximum(maps[1, rows, cols].astype(np.float64) * SIZE_UNIT_PX, 1.0)
    dead = maps[2, rows, cols] > DEAD_LOGIT
    half = np.clip(np.round(diameter_w / 4), 1, colour_half).astype(np.int64)
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    lower = np.array([params.hue_min, params.sat_min, params.val_min], np.uint8)
    upper = np.array([params.hue_max, params.sat_max, params.val_max], np.uint8)
    colour_ok = _fraction_in(cv2.inRange(hsv, lower, upper), s * rows, s * cols, half) >= COLOUR_FRACTION
    value = cv2.inRange(hsv[:, :, 2], np.array([params.val_min]), np.array([params.val_max]))
    value_ok = _fraction_in(value, s * rows, s * cols, half) >= COLOUR_FRACTION
    kept = np.where(dead, value_ok, colour_ok)
    rows, cols = rows[kept], cols[kept]
    dy, dx = _subpixel(logit, rows, cols)
    # Whole-image grid indices first (exact integers), so the float sums are the same in every window.
    grid_x, grid_y = (cols + x0w // s).astype(np.float64), (rows + y0w // s).astype(np.float64)
    working = np.stack([s * (grid_x + dx) + 0.5, s * (grid_y + dy) + 0.5], axis=1)
    return Crowns(rs.to_input(working), rs.to_input(diameter_w[kept]))


def _subpixel(logit: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # Vertex of the parabola through each peak and its two neighbours, per axis, within half a pixel: a
    # working pixel is 0.4-0.6 m, the offset puts the centre where the heatmap's summit is. Only the peak's
    # 3 x 3 neighbourhood is read, so it is the same in any window (0 at the array's edge).
    h, w = logit.shape
    offsets = []
    for axis, (index, size) in enumerate(((rows, h), (cols, w))):
        inner = (index > 0) & (index < size - 1)
        r, c = rows[inner], cols[inner]
        before = logit[r - 1, c] if axis == 0 else logit[r, c - 1]
        after = logit[r + 1, c] if axis == 0 else logit[r, c + 1]
        centre = logit[r, c]
        curvature = before.astype(np.float64) - 2 * centre + after
        shift = np.zeros(index.shape, np.float64)
        safe = curvature < 0
        values = np.zeros(r.shape, np.float64)
        values[safe] = 0.5 * (before[safe] - after[safe]) / curvature[safe]
        shift[inner] = np.clip(values, -0.5, 0.5)
        offsets.append(shift)
    return offsets[0], offsets[1]


def _fraction_in(mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, half: np.ndarray) -> np.ndarray:
    # Share of each square (centre row, col; half-side `half`, clipped to the array) that the mask covers,
    # from exact integer sums of an integral image.
    h, w = mask.shape
    total = cv2.integral((mask > 0).astype(np.uint8), sdepth=cv2.CV_32S)
    ya, yb = np.clip(rows - half, 0, h), np.clip(rows + half + 1, 0, h)
    xa, xb = np.clip(cols - half, 0, w), np.clip(cols + half + 1, 0, w)
    inside = total[yb, xb] - total[ya, xb] - total[yb, xa] + total[ya, xa]
    area = (yb - ya) * (xb - xa)
    result: np.ndarray = inside / np.maximum(area, 1)
    return result


def _empty() -> Crowns:
    return Crowns(np.zeros((0, 2), np.float64), np.zeros((0,), np.float64))
