"""The detection response: one JSON shape for the CLI and the HTTP API (legacy field names)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from treecore.types import DetectionResult, Tree

#: Fields of each tree in the response, in order.
TREE_FIELDS = ("id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter")


def tree_to_dict(tree: Tree, *, decimals: int = 3) -> dict[str, Any]:
    """One tree as the legacy JSON object (metres and pixels rounded to `decimals`).

    Args:
        tree: the tree.
        decimals: digits kept after the point (3 = millimetres for metre fields).

    Returns:
        {"id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter"}.
    """
    out: dict[str, Any] = {"id": tree.id}
    for name in TREE_FIELDS[1:]:
        out[name] = round(float(getattr(tree, name)), decimals)
    return out


def result_to_dict(result: DetectionResult, *, warnings: Iterable[str] = ()) -> dict[str, Any]:
    """The whole detection response: the one JSON shape of the HTTP API, the CLI and `DetectionResult.to_dict`.

    Args:
        result: a DetectionResult.
        warnings: what the caller should know (the HTTP API: form fields it ignored).

    Returns:
        JSON-ready dict: trees, total_trees, image_width, image_height, meters_per_pixel (and its x/y
        parts), parameters (the values used), tile_count, timings (seconds) and warnings.
    """
    mx, my = result.metres_per_pixel
    return {
        "trees": [tree_to_dict(t) for t in result.trees],
        "total_trees": len(result.trees),
        "image_width": result.width,
        "image_height": result.height,
        "meters_per_pixel": round((mx * my) ** 0.5, 6),
        "meters_per_pixel_x": round(mx, 6),
        "meters_per_pixel_y": round(my, 6),
        "parameters": dataclasses.asdict(result.params),
        "tile_count": result.tile_count,
        "timings": {name: round(value, 4) for name, value in result.timings_s.items()},
        "warnings": list(warnings),
    }
