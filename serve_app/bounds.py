"""The bounds of every numeric input of the HTTP API, checked where the input is parsed (422 naming the field).

Form and query fields take theirs from `Form(ge=..., le=..., allow_inf_nan=False)` with these constants; the
tree list of /generate-model (JSON, parsed by treecore.treesio) is checked by `check_trees`.
"""

from __future__ import annotations

from treecore.errors import InvalidTreesError
from treecore.types import DetectionParams, Tree

#: Largest |x| and |y| of a tree, metres from the scene's origin: 10,000 km, a quarter of the Earth's
#: circumference (the OBJ and GLB writers keep 6 decimals of a metre in float64).
MAX_COORDINATE_M = 1e7
#: Largest crown diameter, metres, of a tree or of the detection's min/max_diameter and cluster_threshold.
MAX_DIAMETER_M = 1_000.0
#: Largest real width or height of an image, metres (treecore's own limit).
MAX_REAL_SIZE_M = DetectionParams.MAX_REAL_SIZE_M
#: Smallest real width or height of an image, metres: 1 mm.
MIN_REAL_SIZE_M = 1e-3
#: Largest |pixel_x|, |pixel_y| and pixel_diameter of a tree (they are carried, not drawn).
MAX_PIXELS = 1e9
#: Largest |origin_easting| and |origin_northing| of a GeoJSON georeference, metres.
MAX_ORIGIN_M = 1e9


def _check(value: float, where: str, low: float, high: float, *, open_low: bool = False) -> None:
    inside = (low < value if open_low else low <= value) and value <= high
    if not inside:
        left = "more than" if open_low else "at least"
        raise InvalidTreesError(f"{where} must be {left} {low:g} and at most {high:g}, got {value!r}")


def check_trees(trees: list[Tree]) -> list[Tree]:
    """Refuse trees outside the bounds above (treecore.treesio has checked types and finiteness).

    Args:
        trees: the parsed tree list.

    Returns:
        The same trees.

    Raises:
        InvalidTreesError: a value out of bounds; the message names the index and field, e.g. trees[3].x.
    """
    for index, tree in enumerate(trees):
        where = f"trees[{index}]"
        _check(tree.x, f"{where}.x", -MAX_COORDINATE_M, MAX_COORDINATE_M)
        _check(tree.y, f"{where}.y", -MAX_COORDINATE_M, MAX_COORDINATE_M)
        _check(tree.diameter, f"{where}.diameter", 0.0, MAX_DIAMETER_M, open_low=True)
        _check(tree.pixel_x, f"{where}.pixel_x", -MAX_PIXELS, MAX_PIXELS)
        _check(tree.pixel_y, f"{where}.pixel_y", -MAX_PIXELS, MAX_PIXELS)
        _check(tree.pixel_diameter, f"{where}.pixel_diameter", 0.0, MAX_PIXELS)
    return trees
