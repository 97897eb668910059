"""The picture of what the legacy front end's defaults do to a real forest (README, "What the defaults do").

Two NEON crops of the deepforest 2.1.0 wheel (10 cm per pixel), each detected with every form field at the
legacy front end's default, by the old backend's method and by the default method; white boxes are the
hand-drawn crowns, yellow circles the trees found (crown diameter as drawn).

    .venv/bin/python benchmarks/forest_picture.py docs/defaults-on-a-forest.jpg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.quality import FRONTEND, match  # noqa: E402
from training.neon import GSD_M, load_site, short_name  # noqa: E402
from treecore import DetectionParams, detect_trees  # noqa: E402
from treecore.types import DEFAULT_METHOD  # noqa: E402

SITES = ("OSBS_029", "SOAP_061")
METHODS = ("legacy", DEFAULT_METHOD)
LABEL_PX = 28


def panel(name: str, method: str) -> np.ndarray:
    """One crop with its boxes and the trees `method` finds at the front end's defaults, as BGR."""
    site = load_site(name)
    h, w = site.image.shape[:2]
    params = DetectionParams(real_width=w * GSD_M, real_height=h * GSD_M, method=method, **FRONTEND)  # type: ignore[arg-type]
    trees = detect_trees(site.image, params).trees
    centres = np.array([[t.pixel_x, t.pixel_y] for t in trees], np.float64).reshape(-1, 2)
    score = match(centres, site.boxes)
    out = cv2.cvtColor(site.image, cv2.COLOR_RGB2BGR)
    for x0, y0, x1, y1 in site.boxes.round().astype(int).tolist():
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 255, 255), 1)
    for t in trees:
        centre = (round(t.pixel_x), round(t.pixel_y))
        cv2.circle(out, centre, max(2, round(t.pixel_diameter / 2)), (0, 230, 255), 2)
        cv2.circle(out, centre, 2, (0, 230, 255), -1)
    label = np.zeros((LABEL_PX, w, 3), np.uint8)
    text = f"{short_name(name)}, {method}: {len(trees)} trees, F1 {score.f1:.2f} ({len(site.boxes)} drawn)"
    cv2.putText(label, text, (6, 19), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
    return np.vstack([label, out])


def main() -> int:
    """Write the picture."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    rows = [np.hstack([panel(name, method) for method in METHODS]) for name in SITES]
    picture = np.vstack(rows)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.output), picture, [cv2.IMWRITE_JPEG_QUALITY, 85])
    print(f"wrote {args.output} ({picture.shape[1]} x {picture.shape[0]} px)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
