"""Tree lists in: the /detect-trees response (or a bare list of trees) checked and turned into Trees.

The checks run per column over the whole list (a few passes in C over 60,000 trees, not seven Python checks per
tree); when a column holds a bad value, the first bad tree is checked alone to name its index and field, with
the messages a tree-by-tree check gives.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from treecore.errors import InvalidTreesError, TooManyTreesError
from treecore.types import Tree

_REQUIRED = ("x", "y", "diameter")
_OPTIONAL = ("pixel_x", "pixel_y", "pixel_diameter")
#: Largest id + 1 (ids stay exact in a float64, as JSON readers hold numbers).
_ID_LIMIT = 2**53
_NUMBER_TYPES = frozenset({int, float})
_MISSING = object()


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTreesError(f"{where} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float64
        number = math.inf
    if not math.isfinite(number) or (positive and number <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise InvalidTreesError(f"{where} must be {kind}, got {value!r}")
    return number


def _check_tree(index: int, item: Any) -> Tree:
    """One tree, checked field by field in a fixed order (the first problem is the one named)."""
    where = f"trees[{index}]"
    if not isinstance(item, Mapping):
        raise InvalidTreesError(f"{where} must be an object with x, y and diameter")
    for name in _REQUIRED:
        if name not in item:
            raise InvalidTreesError(f"{where}.{name} is missing")
    tree_id = item.get("id", index + 1)
    if isinstance(tree_id, bool) or not isinstance(tree_id, int) or not 0 <= tree_id < _ID_LIMIT:
        raise InvalidTreesError(f"{where}.id must be a whole number from 0, got {tree_id!r}")
    x = _number(item["x"], f"{where}.x")
    y = _number(item["y"], f"{where}.y")
    diameter = _number(item["diameter"], f"{where}.diameter", positive=True)
    extra = [_number(item[n], f"{where}.{n}") if n in item else 0.0 for n in _OPTIONAL]
    return Tree(tree_id, x, y, diameter, *extra)


def _float_column(values: list[Any], *, positive: bool = False) -> tuple[np.ndarray, int | None]:
    """A column as float64 and the index of its first bad value (not a number, not finite, or not > 0), if any.

    Args:
        values: the field of every tree (`_MISSING` where it is absent: the caller handles that).
        positive: values must be > 0.

    Returns:
        ((N,) float64 (NaN where bad), first bad index or None).
    """
    kinds = set(map(type, values))
    if kinds <= _NUMBER_TYPES:
        try:
            column = np.array(values, dtype=np.float64)
        except OverflowError:  # an integer beyond float64: found by the slow path
            column = np.array([_as_float(v) for v in values], dtype=np.float64)
    else:
        column = np.array([_as_float(v) for v in values], dtype=np.float64)
    good = np.isfinite(column)
    if positive:
        good &= column > 0
    bad = np.flatnonzero(~good)
    return column, int(bad[0]) if bad.size else None


def _as_float(value: Any) -> float:
    """A JSON number as a float; NaN for anything else (a bool, a string, None, an integer beyond float64)."""
    if type(value) not in _NUMBER_TYPES:
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan


def _id_column(items: Sequence[Mapping[str, Any]]) -> tuple[list[int], int | None]:
    """Every tree's id (default: its position + 1) and the index of the first bad one, if any."""
    ids = [item.get("id", index) for index, item in enumerate(items, 1)]
    if set(map(type, ids)) <= {int} and (not ids or (min(ids) >= 0 and max(ids) < _ID_LIMIT)):
        return ids, None
    bad = next(i for i, v in enumerate(ids) if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < _ID_LIMIT)
    return ids, bad


@dataclass(frozen=True)
class TreeColumns:
    """A checked tree list as columns: `ids` (N,) int64; `values` (N, 6) float64, the columns in FIELDS order
    (metres, then pixels)."""

    FIELDS: ClassVar[tuple[str, ...]] = (*_REQUIRED, *_OPTIONAL)

    ids: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        """Number of trees."""
        return int(self.ids.shape[0])

    def trees(self) -> list[Tree]:
        """The Trees, in order."""
        return list(map(Tree, self.ids.tolist(), *self.values.T.tolist()))


def _columns(items: Sequence[Any]) -> tuple[TreeColumns | None, int | None]:
    """The checked columns, or the index of the first tree with any problem."""
    not_mapping = None
    if not all(type(item) is dict for item in items):
        not_mapping = next((i for i, item in enumerate(items) if not isinstance(item, Mapping)), None)
    mappings = items if not_mapping is None else items[:not_mapping]  # the trees before it may fail first
    firsts = [] if not_mapping is None else [not_mapping]
    ids, bad_id = _id_column(mappings)
    if bad_id is not None:
        firsts.append(bad_id)
    columns = []
    for name in TreeColumns.FIELDS:
        default = _MISSING if name in _REQUIRED else 0.0  # a missing x, y or diameter is a bad value
        column, bad = _float_column([item.get(name, default) for item in mappings], positive=name == "diameter")
        columns.append(column)
        if bad is not None:
            firsts.append(bad)
    if firsts:
        return None, min(firsts)
    values = np.stack(columns, axis=1) if columns[0].size else np.zeros((0, len(columns)))
    return TreeColumns(np.array(ids, dtype=np.int64), values), None


def parse_tree_columns(payload: Any, *, max_trees: int) -> TreeColumns:
    """Check a tree list and give it as columns (see parse_trees for what is accepted and refused).

    Args:
        payload: parsed JSON.
        max_trees: the largest accepted number of trees.

    Returns:
        The TreeColumns, in the given order.

    Raises:
        InvalidTreesError, TooManyTreesError: as parse_trees.
    """
    items = payload.get("trees") if isinstance(payload, Mapping) else payload
    if isinstance(payload, Mapping) and "trees" not in payload:
        raise InvalidTreesError('expected an object with a "trees" list (the /detect-trees response)')
    if not isinstance(items, Sequence) or isinstance(items, (str, bytes)):
        raise InvalidTreesError('"trees" must be a list of tree objects')
    if len(items) > max_trees:
        raise TooManyTreesError(f"{len(items):,} trees is more than the limit of {max_trees:,}")
    columns, first_bad = _columns(items)
    if columns is None:
        assert first_bad is not None
        _check_tree(first_bad, items[first_bad])  # raises, naming the field
        # Not a JSON type the columns know (an int or float subclass): tree by tree.
        trees = [_check_tree(index, item) for index, item in enumerate(items)]
        values = [[getattr(t, name) for name in TreeColumns.FIELDS] for t in trees]
        return TreeColumns(np.array([t.id for t in trees], np.int64), np.array(values, np.float64).reshape(-1, 6))
    return columns


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
        InvalidTreesError: wrong shape or values; the message names the index and field (of the first tree
            with a problem, and its first problem in the order shape, x/y/diameter present, id, x, y, diameter,
            pixel_x, pixel_y, pixel_diameter).
        TooManyTreesError: more than `max_trees` trees.
    """
    return parse_tree_columns(payload, max_trees=max_trees).trees()
