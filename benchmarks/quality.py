"""Detection quality on real 10 cm NEON aerial images with hand-drawn crown boxes, at 0.1, 0.3 and 0.5 m.

The images and boxes ship inside the `deepforest` wheel; it is downloaded once with pip (not
installed) into benchmarks/data/ and read with zipfile (training/neon.py). A detected tree is correct
when its centre lies inside a ground-truth box, matched one to one (optimal assignment). Each crop is
scored at its own 0.1 m and shrunk (area mean) to 0.3 m and 0.5 m with the same real size.

The heatmap method is scored with the packaged network (trained on all three crops) and with
leave-one-out networks (trained on the two other crops, the scored one never seen), made by
training/train_heatmap.py into benchmarks/data/models/ on first use (needs `make train`'s extras).

    .venv/bin/python benchmarks/quality.py
    .venv/bin/python benchmarks/quality.py --quick      # packaged network only, no leave-one-out
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.neon import DATA, GSD_M, IMAGES, Site, load_site, read_boxes, short_name  # noqa: E402
from treecore import DetectionParams, detect_trees  # noqa: E402
from treecore.heatmap import HeatmapModel  # noqa: E402

__all__ = ["read_boxes"]

RESOLUTIONS = (0.1, 0.3, 0.5)
LOO_DIR = DATA / "models"
TRAIN = Path(__file__).resolve().parents[1] / "training" / "train_heatmap.py"

#: What the legacy front end sends: every form field at its default (only the real size is the image's).
FRONTEND: dict[str, object] = {
    "hue_min": 35,
    "hue_max": 85,
    "sat_min": 40,
    "sat_max": 255,
    "val_min": 40,
    "val_max": 255,
    "min_diameter": 3.0,
    "max_diameter": 15.0,
    "cluster_threshold": 10.0,
}
#: The best single parameter set per method over the three crops at 0.1 m (no per-image tuning).
BEST: dict[str, dict[str, object]] = {
    "heatmap": {
        "hue_min": 0,
        "hue_max": 179,
        "sat_min": 0,
        "val_min": 0,
        "min_diameter": 1.0,
        "max_diameter": 15.0,
        "cluster_threshold": 0.0,
    },
    "watershed": {
        "hue_min": 20,
        "hue_max": 110,
        "sat_min": 10,
        "val_min": 20,
        "min_diameter": 3.0,
        "max_diameter": 10.0,
        "cluster_threshold": 0.0,
    },
    "legacy": {"min_diameter": 1.0, "cluster_threshold": 0.0},
}


@dataclass(frozen=True)
class Score:
    """Precision, recall and F1 of one image, with the counts behind them."""

    detected: int
    truth: int
    matched: int
    largest_m: float = 0.0

    @property
    def precision(self) -> float:
        """Matched / detected."""
        return self.matched / self.detected if self.detected else 0.0

    @property
    def recall(self) -> float:
        """Matched / ground truth."""
        return self.matched / self.truth if self.truth else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0


def match(centres: np.ndarray, boxes: np.ndarray) -> Score:
    """One-to-one optimal matching of detected centres to the boxes that contain them.

    Args:
        centres: (N, 2) [x, y] pixels.
        boxes: (M, 4) [x_min, y_min, x_max, y_max] pixels.

    Returns:
        The Score (a pair counts only when the centre lies inside the box).
    """
    if len(centres) == 0 or len(boxes) == 0:
        return Score(len(centres), len(boxes), 0)
    x, y = centres[:, 0:1], centres[:, 1:2]
    inside = (x >= boxes[:, 0]) & (x <= boxes[:, 2]) & (y >= boxes[:, 1]) & (y <= boxes[:, 3])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    cost = np.hypot(x - cx, y - cy)
    forbidden = 1e9
    cost[~inside] = forbidden
    rows, cols = linear_sum_assignment(cost)
    return Score(len(centres), len(boxes), int((cost[rows, cols] < forbidden).sum()))


def at_resolution(site: Site, resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """The crop shrunk (area mean) to `resolution` metres per pixel, and its boxes in those pixels."""
    if resolution == GSD_M:
        return site.image, site.boxes
    h, w = site.image.shape[:2]
    size = (int(round(w * GSD_M / resolution)), int(round(h * GSD_M / resolution)))
    image = cv2.resize(site.image, size, interpolation=cv2.INTER_AREA)
    return image, site.boxes * np.array([size[0] / w, size[1] / h] * 2)


def evaluate(site: Site, resolution: float, settings: dict[str, object], model: HeatmapModel | None = None) -> Score:
    """Detect with `settings` at `resolution` (real size unchanged) and score against the boxes."""
    image, boxes = at_resolution(site, resolution)
    h, w = site.image.shape[:2]
    params = DetectionParams(real_width=w * GSD_M, real_height=h * GSD_M, **settings)  # type: ignore[arg-type]
    trees = detect_trees(image, params, model=model).trees
    centres = np.array([[t.pixel_x, t.pixel_y] for t in trees], np.float64).reshape(-1, 2)
    largest = max((t.diameter for t in trees), default=0.0)
    s = match(centres, boxes)
    return Score(s.detected, s.truth, s.matched, largest)


def loo_model(name: str) -> HeatmapModel:
    """The network trained without `name` (trained now when missing)."""
    path = LOO_DIR / f"loo_{short_name(name)}.onnx"
    if not path.exists():
        LOO_DIR.mkdir(parents=True, exist_ok=True)
        print(f"training the leave-{short_name(name)}-out network (once) ...", flush=True)
        subprocess.run(
            [sys.executable, str(TRAIN), "--leave-out", short_name(name), "--out", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
    return HeatmapModel(path)


def cell(s: Score) -> str:
    """P / R / F1 with F1 in bold."""
    return f"{s.precision:.2f} / {s.recall:.2f} / **{s.f1:.2f}**"


def main() -> int:
    """Print the table: method x parameters x image, P / R / F1 at each resolution."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="packaged network only (no leave-one-out)")
    args = parser.parse_args()
    sites = [load_site(name) for name in IMAGES]
    print("Ground truth crowns (box side, metres):")
    for site in sites:
        side = ((site.boxes[:, 2] - site.boxes[:, 0]) + (site.boxes[:, 3] - site.boxes[:, 1])) / 2 * GSD_M
        print(
            f"  {short_name(site.name):<9} {site.image.shape[1]}x{site.image.shape[0]} px, {len(site.boxes)} crowns "
            f"({int(site.dead.sum())} dead), median {np.median(side):.1f} m, "
            f"{(side < 3).mean():.0%} under 3 m, largest {side.max():.1f} m"
        )
    print()
    print("| method | network | parameters | image | " + " | ".join(f"{r} m P / R / F1" for r in RESOLUTIONS) + " |")
    print("|---|---|---|---|" + "---|" * len(RESOLUTIONS))
    rows: list[tuple[str, str, str, dict[str, object], bool]] = []
    for label, settings in (("front end", FRONTEND), ("best single set", BEST["heatmap"])):
        if not args.quick:
            rows.append(("heatmap", "leave-one-out", label, settings, True))
        rows.append(("heatmap", "all three", label, settings, False))
    for method in ("watershed", "legacy"):
        for label, settings in (("front end", FRONTEND), ("best single set", BEST[method])):
            rows.append((method, "", label, settings, False))
    largest = 0.0
    for method, network, label, settings, loo in rows:
        for site in sites:
            model = loo_model(site.name) if loo else None
            scores = [evaluate(site, r, {**settings, "method": method}, model) for r in RESOLUTIONS]
            largest = max([largest, *(s.largest_m for s in scores)]) if label == "front end" else largest
            print(
                f"| {method} | {network} | {label} | {short_name(site.name)} | "
                + " | ".join(cell(s) for s in scores)
                + " |",
                flush=True,
            )
    print("| DeepForest (RetinaNet, published, NeonTreeEvaluation) | | | all | P 0.66 / R 0.79 | | |")
    print(f"\nlargest crown reported with the front-end parameters (max_diameter 15 m): {largest:.1f} m")
    print(f"front-end parameters: {FRONTEND}")
    for method, settings in BEST.items():
        print(f"best single set, {method}: {settings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
