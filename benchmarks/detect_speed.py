"""Detection speed on one core: megapixels per second next to the unavoidable floor.

The floor is decode + RGB->HSV + inRange alone, measured in the same run; the detector is decode +
`detect_trees` (each method). Best of N repetitions; ratio = detector speed / floor speed.

    .venv/bin/python benchmarks/detect_speed.py            # 8192 x 8192 (issue's scene)
    .venv/bin/python benchmarks/detect_speed.py --size 2048 --repeat 2
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np

from treecore import DetectionParams, decode_image, detect_trees
from treecore.vegetation import to_hsv

GSD_M = 0.1


def make_scene(size: int, seed: int = 7) -> bytes:
    """A deterministic synthetic aerial scene: shaded crowns of 2-9 m on textured soil, as PNG bytes."""
    rng = np.random.default_rng(seed)
    soil = rng.integers(0, 30, (size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
    image = cv2.resize(soil, (size, size), interpolation=cv2.INTER_LINEAR)
    image = cv2.add(image, np.full_like(image, (140, 115, 85)))
    count = int(size * size * GSD_M**2 / 60)  # about one crown per 60 m2
    cols, rows = rng.integers(0, size, count), rng.integers(0, size, count)
    radii = rng.uniform(1.0, 4.5, count) / GSD_M
    for c, r, k in zip(cols.tolist(), rows.tolist(), radii.tolist(), strict=True):
        k = int(k)
        cv2.circle(image, (c, r), k, (30, 110, 30), -1)
        cv2.circle(image, (c, r), max(1, k // 2), (45, 160, 45), -1)
    noise = rng.integers(0, 12, image.shape, dtype=np.uint8)
    image = cv2.add(image, noise)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1])
    assert ok
    return png.tobytes()


def best_of(repeat: int, work) -> tuple[float, object]:
    """Fastest wall time of `repeat` runs, and the last result."""
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = work()
        best = min(best, time.perf_counter() - started)
    return best, result


def main() -> int:
    """Print the speed table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192, help="scene side, pixels (default 8192)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    data = make_scene(args.size)
    megapixels = args.size * args.size / 1e6
    real = args.size * GSD_M
    defaults = DetectionParams(real_width=real, real_height=real)
    lower = np.array([defaults.hue_min, defaults.sat_min, defaults.val_min], np.uint8)
    upper = np.array([defaults.hue_max, defaults.sat_max, defaults.val_max], np.uint8)

    def floor() -> int:
        hsv = to_hsv(decode_image(data, max_pixels=10**9))
        return int(cv2.countNonZero(cv2.inRange(hsv, lower, upper)))

    rows = []
    floor_s, _ = best_of(args.repeat, floor)
    rows.append(("floor: decode + HSV + inRange", floor_s, None))
    for method in ("legacy", "watershed"):
        params = DetectionParams(real_width=real, real_height=real, method=method, cluster_threshold=0)
        seconds, result = best_of(args.repeat, lambda p=params: detect_trees(decode_image(data, max_pixels=10**9), p))
        rows.append((f"decode + detect_trees ({method})", seconds, len(result.trees)))  # type: ignore[union-attr]
    print(f"scene {args.size} x {args.size} px ({megapixels:.1f} MP, PNG {len(data) / 1e6:.1f} MB), one core, best of {args.repeat}")
    print("| step | seconds | MP/s | trees | share of floor speed |")
    print("|---|---|---|---|---|")
    for label, seconds, trees in rows:
        share = floor_s / seconds
        print(f"| {label} | {seconds:.2f} | {megapixels / seconds:.1f} | {'' if trees is None else trees} | {share:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
