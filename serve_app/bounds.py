"""The bounds of every numeric input of the HTTP API, checked where the input is parsed (422 naming the field).

Form and query fields take theirs from `Form(ge=..., le=..., allow_inf_nan=False)` with these constants; the
tree list of /generate-model (JSON, parsed by treecore.treesio) is checked by `check_tree_columns` (or, on Trees,
`check_trees`).
"""

from __future__ import annotations

import numpy as np

from treecore.errors import InvalidTreesError
from treecore.treesio import TreeColumns
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


#: Each bounded column of a tree list: (field, low, high, open_low), in the order a tree's fields are checked.
_TREE_BOUNDS = (
    ("x", -MAX_COORDINATE_M, MAX_COORDINATE_M, False),
    ("y", -MAX_COORDINATE_M, MAX_COORDINATE_M, False),
    ("diameter", 0.0, MAX_DIAMETER_M, True),
    ("pixel_x", -MAX_PIXELS, MAX_PIXELS, False),
    ("pixel_y", -MAX_PIXELS, MAX_PIXELS, False),
    ("pixel_diameter", 0.0, MAX_PIXELS, False),
)


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
        for name, low, high, open_low in _TREE_BOUNDS:
            _check(getattr(tree, name), f"trees[{index}].{name}", low, high, open_low=open_low)
    return trees


def check_tree_columns(columns: TreeColumns) -> TreeColumns:
    """check_trees over columns, vectorised (the same bounds and messages: the first tree out of bounds, its first
    field out of bounds).

    Args:
        columns: the parsed tree list as columns.

    Returns:
        The same columns.

    Raises:
        InvalidTreesError: as check_trees.
    """
    values = columns.values
    bad = np.zeros(len(columns), dtype=bool)
    for name, low, high, open_low in _TREE_BOUNDS:
        column = values[:, TreeColumns.FIELDS.index(name)]
        inside = ((column > low) if open_low else (column >= low)) & (column <= high)
        bad |= ~inside
    first = np.flatnonzero(bad)
    if first.size:
        index = int(first[0])
        row = dict(zip(TreeColumns.FIELDS, values[index].tolist(), strict=True))
        for name, low, high, open_low in _TREE_BOUNDS:
            _check(row[name], f"trees[{index}].{name}", low, high, open_low=open_low)
    return columns
