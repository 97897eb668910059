"""Tree lists in: the /detect-trees response (or a bare list of trees) checked and turned into Trees."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from treecore.errors import InvalidTreesError, TooManyTreesError
from treecore.types import Tree

_REQUIRED = ("x", "y", "diameter")
_OPTIONAL = ("pixel_x", "pixel_y", "pixel_diameter")


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTreesError(f"{where} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise InvalidTreesError(f"{where} must be {kind}, got {value!r}")
    return number


def parse_trees(payload: Any, *, max_trees: int) -> list[Tree]:
    """Check a tree list and build Trees from it.

    Accepts the /detect-trees response as it is (a mapping with "trees"; other fields ignored) or a bare
    list of tree objects. Each tree needs x, y (metres) and diameter (> 0 metres); `id` is optional
    (default: position + 1) and must be a whole number; pixel fields are optional.

    Args:
        payload: parsed JSON.
        max_trees: the largest accepted number of trees.

    Returns:
        The trees, in the given order.

    Raises:
        InvalidTreesError: wrong shape or values; the message names the index and field.
        TooManyTreesError: more than `max_trees` trees.
    """
    items = payload.get("trees") if isinstance(payload, Mapping) else payload
    if isinstance(payload, Mapping) and "trees" not in payload:
        raise InvalidTreesError('expected an object with a "trees" list (the /detect-trees response)')
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InvalidTreesError('"trees" must be a list of tree objects')
    if len(items) > max_trees:
        raise TooManyTreesError(f"{len(items):,} trees is more than the limit of {max_trees:,}")
    trees = []
    for index, item in enumerate(items):
        where = f"trees[{index}]"
        if not isinstance(item, Mapping):
            raise InvalidTreesError(f"{where} must be an object with x, y and diameter")
        for name in _REQUIRED:
            if name not in item:
                raise InvalidTreesError(f"{where}.{name} is missing")
        tree_id = item.get("id", index + 1)
        if isinstance(tree_id, bool) or not isinstance(tree_id, int) or not 0 <= tree_id < 2**53:
            raise InvalidTreesError(f"{where}.id must be a whole number from 0, got {tree_id!r}")
        x = _number(item["x"], f"{where}.x")
        y = _number(item["y"], f"{where}.y")
        diameter = _number(item["diameter"], f"{where}.diameter", positive=True)
        extra = [_number(item[n], f"{where}.{n}") if n in item else 0.0 for n in _OPTIONAL]
        trees.append(Tree(tree_id, x, y, diameter, *extra))
    return trees
