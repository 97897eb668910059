"""Property tests: the detection JSON parser never fails but with its own errors; any tree list writes a valid OBJ."""

from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from treecore.basemodels import load_model
from treecore.errors import InvalidTreesError, TooManyTreesError
from treecore.mesh import load_obj
from treecore.objwriter import iter_obj_parts
from treecore.treesio import parse_trees
from treecore.types import Tree

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
TREE_KEYS = st.sampled_from(["id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter", "other"])
TREEISH = st.dictionaries(TREE_KEYS, st.integers() | st.floats() | st.text(max_size=3) | st.none(), max_size=8)


@given(payload=JSON | st.fixed_dictionaries({"trees": st.lists(TREEISH | JSON, max_size=6)}))
@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
def test_parser_only_raises_its_own_errors(payload: object) -> None:
    try:
        trees = parse_trees(payload, max_trees=5)
    except (InvalidTreesError, TooManyTreesError) as exc:
        assert str(exc)  # a message for the person who sent it
        return
    for tree in trees:
        assert all(math.isfinite(v) for v in (tree.x, tree.y, tree.diameter)) and tree.diameter > 0


FINITE = st.floats(min_value=-1e5, max_value=1e5, allow_nan=False)
VALID_TREE = st.fixed_dictionaries(
    {"id": st.integers(0, 2**40), "x": FINITE, "y": FINITE, "diameter": st.floats(0.01, 100)}
)


@given(trees=st.lists(VALID_TREE, max_size=20))
def test_valid_tree_lists_round_trip_through_json(trees: list[dict[str, float]]) -> None:
    parsed = parse_trees(json.loads(json.dumps({"trees": trees, "total_trees": len(trees)})), max_trees=100)
    assert [(t.id, t.x, t.y, t.diameter) for t in parsed] == [(t["id"], t["x"], t["y"], t["diameter"]) for t in trees]


MESH, _ = load_model("tree_lowpoly")


@given(
    trees=st.lists(
        st.builds(
            Tree, st.integers(1, 10**7), FINITE, FINITE, st.floats(0.5, 40), st.just(0.0), st.just(0.0), st.just(0.0)
        ),
        max_size=12,
    ),
    per_part=st.integers(1, 5),
)
@settings(max_examples=60, deadline=None)
def test_any_tree_list_writes_an_obj_that_reads_back(trees: list[Tree], per_part: int) -> None:
    text = b"".join(iter_obj_parts(trees, MESH, mtl_name="s.mtl", trees_per_part=per_part)).decode()
    if not trees:  # a valid empty model: header only (our loader refuses it, as a base mesh needs faces)
        assert text.startswith("# Tree scene") and "\nf " not in text and "\nv " not in text
        return
    scene = load_obj(text, name="scene")
    n_vertices, n_faces = len(MESH.positions), len(MESH.corners)
    assert scene.positions.shape == (len(trees) * n_vertices, 3)
    assert len(scene.corners) == len(trees) * n_faces
    assert text.count("\no tree_") == len(trees)
    for k, tree in enumerate(trees):
        own = scene.positions[k * n_vertices : (k + 1) * n_vertices]
        # The tree stands on the ground at (x, 0, y), as wide as its crown (within the 3-decimal rounding).
        assert abs(own[:, 1].min()) <= 0.001
        assert np.allclose(
            (own[:, [0, 2]].min(0) + own[:, [0, 2]].max(0)) / 2, [tree.x, tree.y], atol=0.05 * tree.diameter + 0.002
        )
        corners = scene.corners[k * n_faces : (k + 1) * n_faces, :, 0]
        assert corners.min() == k * n_vertices and corners.max() == (k + 1) * n_vertices - 1
