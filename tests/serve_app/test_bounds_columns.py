"""The tree bounds checked over columns equal the tree-by-tree check: the same trees pass, the same message fails."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from serve_app.bounds import MAX_COORDINATE_M, MAX_DIAMETER_M, MAX_PIXELS, check_tree_columns, check_trees
from treecore.errors import InvalidTreesError
from treecore.treesio import parse_tree_columns


def _outcome(check: object, payload: list[dict[str, float]]) -> str:
    columns = parse_tree_columns(payload, max_trees=100)
    try:
        if check is check_trees:
            check_trees(columns.trees())
        else:
            check_tree_columns(columns)
    except InvalidTreesError as exc:
        return str(exc)
    return "ok"


def _near(limit: float) -> st.SearchStrategy[float]:
    """Values around a bound: well inside, at it, just past it."""
    return st.sampled_from([0.0, limit, -limit, limit * 1.0000001, -limit * 1.0000001, 1.0, -1.0])


TREE = st.fixed_dictionaries(
    {
        "x": _near(MAX_COORDINATE_M),
        "y": _near(MAX_COORDINATE_M),
        "diameter": st.sampled_from([1e-9, 1.0, MAX_DIAMETER_M, MAX_DIAMETER_M * 1.0000001]),
    },
    optional={"pixel_x": _near(MAX_PIXELS), "pixel_y": _near(MAX_PIXELS), "pixel_diameter": _near(MAX_PIXELS)},
)


@settings(max_examples=300)
@given(trees=st.lists(TREE, max_size=12))
def test_columns_and_trees_agree(trees: list[dict[str, float]]) -> None:
    assert _outcome(check_tree_columns, trees) == _outcome(check_trees, trees)
