"""The `detect` subcommand: trees of one image file as JSON, optionally an overlay PNG."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import cv2

from treecore.detect import detect_trees
from treecore.files import read_input, write_atomic
from treecore.imageio import decode_image
from treecore.overlay import draw_overlay
from treecore.report import result_to_dict
from treecore.types import METHODS, DetectionParams

NAME = "detect"
HELP = "detect trees in a PNG, JPEG or TIFF image and write them as JSON"
DEFAULT_MAX_PIXELS = 400_000_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the subcommand's arguments (defaults are the legacy service's).

    Args:
        parser: the subcommand's parser.
    """
    defaults = DetectionParams()
    parser.add_argument("image", type=Path, help="PNG, JPEG or TIFF file")
    parser.add_argument("-o", "--output", type=Path, help="write the JSON here (default: standard output)")
    parser.add_argument("--overlay", type=Path, help="also write a PNG with the crowns drawn on the image")
    parser.add_argument("--tiles", type=int, default=1, help="number of tiles (the result does not depend on it)")
    parser.add_argument("--method", choices=METHODS, default=defaults.method)
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS, help="refuse larger images")
    for name in ("hue_min", "hue_max", "sat_min", "sat_max", "val_min", "val_max"):
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name))
    for name, unit in (
        ("min_diameter", "m"),
        ("max_diameter", "m"),
        ("cluster_threshold", "m"),
        ("real_width", "m covered by the image"),
        ("real_height", "m covered by the image"),
    ):
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=getattr(defaults, name), help=f"{unit}")


def run(args: argparse.Namespace) -> int:
    """Detect, write the JSON (and overlay) atomically, print a one-line summary.

    Args:
        args: parsed arguments.

    Returns:
        0 on success. Bad input raises a TreecoreError before anything is written.
    """
    started = time.perf_counter()
    names = "hue_min hue_max sat_min sat_max val_min val_max min_diameter max_diameter cluster_threshold"
    params = DetectionParams(**{n: getattr(args, n) for n in (names + " real_width real_height method").split()})
    image = decode_image(read_input(args.image), max_pixels=args.max_pixels)
    decoded = time.perf_counter()
    result = detect_trees(image, params, n_tiles=args.tiles)
    # The HTTP API's timings: decode, detect, merge and the total.
    timings = {"decode_s": decoded - started, **result.timings_s, "total_s": time.perf_counter() - started}
    report = result_to_dict(dataclasses.replace(result, timings_s=timings))
    text = json.dumps(report, indent=1) + "\n"
    if args.output:
        write_atomic(args.output, text.encode())
    else:
        sys.stdout.write(text)
    if args.overlay:
        ok, png = cv2.imencode(".png", cv2.cvtColor(draw_overlay(image, result.trees), cv2.COLOR_RGB2BGR))
        write_atomic(args.overlay, png.tobytes())
    elapsed = time.perf_counter() - started
    print(
        f"{args.image.name}: {_count(len(result.trees), 'tree')} in {result.width} x {result.height} px "
        f"({params.real_width:g} x {params.real_height:g} m, {_count(result.tile_count, 'tile')}, {params.method}) "
        f"in {elapsed:.2f} s",
        file=sys.stderr,
    )
    return 0


def _count(n: int, noun: str) -> str:
    """e.g. "1 tile", "2 tiles"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"
