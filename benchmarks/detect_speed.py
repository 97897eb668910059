"""Detection speed on one core: megapixels per second next to the unavoidable floor.

The floor is decode + RGB->HSV + inRange alone, measured in the same run; the detector is decode +
`detect_trees` (each method; the default method at 0.1 m and at 0.5 m per pixel, resampling included).
Best of N repetitions; ratio = detector speed / floor speed. MP/s counts INPUT pixels.

The 0.5 m scene: the 0.1 m scene shrunk 5x (area mean, crowns of 2-9 m become 4-18 px) and repeated 5 x 5,
so both scenes have the same pixel count.

    .venv/bin/python benchmarks/detect_speed.py            # 8192 x 8192 (issue's scene)
    .venv/bin/python benchmarks/detect_speed.py --size 2048 --repeat 2
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from treecore import DetectionParams, decode_image, detect_trees
from treecore.types import DEFAULT_METHOD, METHODS
from treecore.vegetation import to_hsv

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from make_sample import make_scene  # noqa: E402

GSD_M = 0.1  # metres per pixel of the synthetic scene


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
    small = cv2.resize(
        decode_image(data, max_pixels=10**9), (args.size // 5, args.size // 5), interpolation=cv2.INTER_AREA
    )
    ok, coarse = cv2.imencode(
        ".png", cv2.cvtColor(np.tile(small, (5, 5, 1)), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 1]
    )
    assert ok
    coarse_data, coarse_side = coarse.tobytes(), args.size // 5 * 5
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
    rows.append(("floor: decode + HSV + inRange, 0.1 m scene", floor_s, megapixels, None))
    cases = [(m, data, real, args.size, GSD_M) for m in (DEFAULT_METHOD, *(m for m in METHODS if m != DEFAULT_METHOD))]
    cases.insert(1, (DEFAULT_METHOD, coarse_data, coarse_side * 0.5, coarse_side, 0.5))
    for method, png, real_m, side, gsd in cases:
        params = DetectionParams(real_width=real_m, real_height=real_m, method=method)
        seconds, result = best_of(
            args.repeat, lambda p=params, d=png: detect_trees(decode_image(d, max_pixels=10**9), p)
        )
        mp = side * side / 1e6
        label = f"decode + detect_trees ({method}{', default' if method == DEFAULT_METHOD else ''}), {gsd} m input"
        rows.append((label, seconds, mp, len(result.trees)))  # type: ignore[union-attr]
    print(
        f"scene {args.size} x {args.size} px ({megapixels:.1f} MP, PNG {len(data) / 1e6:.1f} MB), "
        f"one core, best of {args.repeat}"
    )
    print("| step | seconds | MP/s | trees | share of floor speed |")
    print("|---|---|---|---|---|")
    for label, seconds, mp, trees in rows:
        share = (mp / seconds) / (megapixels / floor_s)
        count = "" if trees is None else trees
        print(f"| {label} | {seconds:.2f} | {mp / seconds:.1f} | {count} | {share:.0%} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
