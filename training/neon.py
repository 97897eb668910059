"""The NEON crops with hand-drawn crown boxes that ship inside the deepforest 2.1.0 wheel.

The wheel is fetched once with pip (`pip download --no-deps`, never installed) into benchmarks/data/ and
read with zipfile. Only the three crops below are used for training and tuning; the wheel's other images
stay out (kept for an independent check).
"""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data"
WHEEL = "deepforest==2.1.0"
IMAGES = ("OSBS_029", "SOAP_061", "2019_YELL_2_541000_4977000_image_crop")
GSD_M = 0.1  # NEON RGB orthophotos: 10 cm per pixel


@dataclass(frozen=True)
class Site:
    """One annotated crop.

    image: (H, W, 3) uint8 RGB at GSD_M metres per pixel.
    boxes: (N, 4) float64 [x_min, y_min, x_max, y_max], pixels.
    dead: (N,) bool, the box is labelled "Dead".
    """

    name: str
    image: np.ndarray
    boxes: np.ndarray
    dead: np.ndarray


def wheel_path() -> Path:
    """The deepforest wheel in benchmarks/data, downloaded with pip on first use."""
    found = sorted(DATA.glob("deepforest-2.1.0-*.whl"))
    if not found:
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", str(DATA)], check=True
        )
        found = sorted(DATA.glob("deepforest-2.1.0-*.whl"))
    return found[0]


def read_boxes(xml_text: str) -> tuple[np.ndarray, np.ndarray]:
    """Boxes and dead flags of a Pascal VOC annotation.

    Returns:
        boxes: (N, 4) float64 [x_min, y_min, x_max, y_max], pixels; dead: (N,) bool.
    """
    root = ET.fromstring(xml_text)
    objects = list(root.iter("object"))
    rows = [[float(obj.findtext(f"bndbox/{k}") or 0) for k in ("xmin", "ymin", "xmax", "ymax")] for obj in objects]
    dead = np.array([(obj.findtext("name") or "").strip().lower() == "dead" for obj in objects], bool)
    return np.array(rows, np.float64).reshape(-1, 4), dead


def load_site(name: str, wheel: Path | None = None) -> Site:
    """One crop (RGB) and its boxes, read out of the wheel."""
    with zipfile.ZipFile(wheel or wheel_path()) as archive:
        data = np.frombuffer(archive.read(f"deepforest/data/{name}.png"), np.uint8)
        boxes, dead = read_boxes(archive.read(f"deepforest/data/{name}.xml").decode())
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return Site(name, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), boxes, dead)


def short_name(name: str) -> str:
    """OSBS_029, SOAP_061, YELL_541."""
    return "YELL_541" if name.startswith("2019_YELL_2_541000") else name
