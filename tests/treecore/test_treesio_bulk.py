"""The column-wise tree parser against the tree-by-tree one it replaced: the same trees, or the same error."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treecore.errors import InvalidTreesError, TooManyTreesError
from treecore.treesio import parse_tree_columns, parse_trees
from treecore.types import Tree


def _number(value: Any, where: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTreesError(f"{where} must be a number, got {type(value).__name__}")
    number = float(value)
    if not math.isfinite(number) or (positive and number <= 0):
        kind = "a positive finite number" if positive else "a finite number"
        raise InvalidTreesError(f"{where} must be {kind}, got {value!r}")
    return number


def per_field_parse_trees(payload: Any, *, max_trees: int) -> list[Tree]:
    """treecore.treesio.parse_trees as it was, one Python check per field (the reference)."""
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
        for name in ("x", "y", "diameter"):
            if name not in item:
                raise InvalidTreesError(f"{where}.{name} is missing")
        tree_id = item.get("id", index + 1)
        if isinstance(tree_id, bool) or not isinstance(tree_id, int) or not 0 <= tree_id < 2**53:
            raise InvalidTreesError(f"{where}.id must be a whole number from 0, got {tree_id!r}")
        x = _number(item["x"], f"{where}.x")
        y = _number(item["y"], f"{where}.y")
        diameter = _number(item["diameter"], f"{where}.diameter", positive=True)
        extra = [
            _number(item[n], f"{where}.{n}") if n in item else 0.0 for n in ("pixel_x", "pixel_y", "pixel_diameter")
        ]
        trees.append(Tree(tree_id, x, y, diameter, *extra))
    return trees


def _outcome(parse: Any, payload: Any, max_trees: int) -> tuple[str, Any]:
    try:
        return "trees", parse(payload, max_trees=max_trees)
    except (InvalidTreesError, TooManyTreesError) as exc:
        return type(exc).__name__, str(exc)


KEYS = st.sampled_from(["id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter", "other"])
#: Mostly good values (so that trees get far before their first problem), and every kind of bad one.
GOOD = st.floats(-1e6, 1e6, allow_nan=False) | st.integers(-(2**60), 2**60)
BAD = st.floats() | st.booleans() | st.none() | st.text(max_size=3) | st.lists(st.integers(), max_size=1)
VALUE = st.one_of(GOOD, GOOD, GOOD, BAD, st.integers(0, 2**54))
TREE = st.fixed_dictionaries(
    {"x": GOOD, "y": GOOD, "diameter": st.floats(0.1, 50) | st.integers(1, 50)},
    optional={"id": st.integers(0, 2**20), "pixel_x": GOOD, "pixel_y": GOOD, "pixel_diameter": GOOD},
)
ANY_TREE = TREE | st.dictionaries(KEYS, VALUE, max_size=8) | BAD
TREE_LISTS = st.lists(st.one_of(TREE, TREE, TREE, ANY_TREE), max_size=30)


@given(trees=TREE_LISTS, wrap=st.booleans(), max_trees=st.integers(0, 40))
@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
def test_columns_equal_the_tree_by_tree_parser(trees: list[Any], wrap: bool, max_trees: int) -> None:
    payload: Any = {"trees": trees, "total_trees": len(trees)} if wrap else trees
    assert _outcome(parse_trees, payload, max_trees) == _outcome(per_field_parse_trees, payload, max_trees)


@given(trees=st.lists(TREE, max_size=30))
def test_valid_lists_give_the_same_trees_and_columns(trees: list[dict[str, Any]]) -> None:
    expected = per_field_parse_trees(trees, max_trees=100)
    columns = parse_tree_columns({"trees": trees}, max_trees=100)
    assert parse_trees(trees, max_trees=100) == expected == columns.trees()
    assert len(columns) == len(expected) and columns.values.shape == (len(expected), 6)


class _Number(float):
    """A float subclass (not something JSON gives): the columns fall back to tree by tree, with the same answer."""


def test_a_float_subclass_is_parsed_tree_by_tree() -> None:
    trees = [{"x": _Number(1.5), "y": 2, "diameter": 3}]
    assert parse_trees(trees, max_trees=1) == per_field_parse_trees(trees, max_trees=1)


def test_an_integer_beyond_float64_is_a_clear_error() -> None:
    with pytest.raises(InvalidTreesError, match=r"trees\[0\]\.x must be a finite number"):
        parse_trees([{"x": 10**400, "y": 0, "diameter": 1}], max_trees=1)


def test_the_first_bad_tree_and_its_first_bad_field_are_named() -> None:
    trees: list[Any] = [{"x": 1, "y": 1, "diameter": 1}] * 5
    trees = [*trees[:2], {"x": 1, "y": "a", "diameter": -1}, {"id": -3}, 7]
    with pytest.raises(InvalidTreesError, match=r"^trees\[2\]\.y must be a number, got str$"):
        parse_trees(trees, max_trees=10)
