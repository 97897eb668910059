"""Write a deterministic synthetic aerial scene (PNG) with shaded crowns on textured soil.

    python scripts/make_sample.py out.png [--size 1024]

At 10 cm per pixel: a 1024 px scene covers 102.4 x 102.4 m.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

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


def main() -> int:
    """Write the scene to the given path."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_bytes(make_scene(args.size))
    print(f"wrote {args.output} ({args.size} x {args.size} px, {args.size * GSD_M:g} m a side)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
