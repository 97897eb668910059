import math
import time

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from treecore.merge import close_pairs, merge_trees, seed_groups
from treecore.types import Tree


def tree(x, y, d=4.0):
    return Tree(0, x, y, d, x * 10, y * 10, d * 10)


def test_no_merge_when_threshold_is_zero_and_ids_follow_sorted_order():
    trees = [tree(5, 5), tree(1, 1), tree(3, 1)]
    out = merge_trees(trees, 0)
    assert [(t.id, t.x, t.y) for t in out] == [(1, 1, 1), (2, 3, 1), (3, 5, 5)]
    assert out[0] == Tree(1, 1, 1, 4.0, 10, 10, 40.0)  # untouched values


def test_merge_never_chains_and_is_area_weighted():
    # Crowns of 18 m (c) and 18 m (b) 8 m apart, a 8 m from b and 16 m from c. The largest crown (c, first by
    # the tie order of x) takes b; a is 16 m from c, so it stays a tree of its own instead of being pulled in
    # through b.
    out = merge_trees([tree(0, 0, 2), tree(8, 0, 18), tree(16, 0, 18.5), tree(50, 50)], 10)
    joined = (pytest_approx((8 * 18**2 + 16 * 18.5**2) / (18**2 + 18.5**2)), np.sqrt(18**2 + 18.5**2))
    assert [(t.x, t.diameter) for t in out] == [(0, 2), joined, (50, 4)]


def test_touching_crowns_are_two_trees_and_a_crown_inside_another_is_joined():
    # 6 m crowns 6 m apart touch: two trees. A 3 m detection 2 m from a 6 m crown's centre lies inside it.
    assert len(merge_trees([tree(0, 0, 6), tree(6, 0, 6)], 10)) == 2
    assert len(merge_trees([tree(0, 0, 6), tree(2, 0, 3)], 10)) == 1


def pytest_approx(value):
    import pytest

    return pytest.approx(value, rel=1e-12)


def test_a_row_of_crowns_never_becomes_one_forest_tree():
    # 50 overlapping crowns of 8 m in a row, 3 m apart, threshold 10 m: chaining would make one 56 m tree.
    row = [tree(3.0 * i, 0, 8) for i in range(50)]
    out = merge_trees(row, 10, min_diameter=3, max_diameter=15)
    assert len(out) > 1
    assert max(t.diameter for t in out) <= 15
    assert max(t.x for t in out) - min(t.x for t in out) > 100


def test_merged_diameter_is_clipped_to_max_and_small_ones_dropped():
    out = merge_trees(
        [tree(0, 0, 10), tree(1, 0, 10), tree(2, 0, 10), tree(80, 80, 2)], 5, min_diameter=3, max_diameter=15
    )
    assert [t.diameter for t in out] == [15.0]
    assert out[0].pixel_diameter == 150.0  # the pixel diameter in proportion


def test_exactly_at_threshold_is_not_merged():
    assert len(merge_trees([tree(0, 0), tree(10, 0)], 10)) == 2


def test_input_order_does_not_matter():
    rng = np.random.default_rng(5)
    trees = [tree(float(x), float(y), float(d)) for x, y, d in rng.uniform(1, 100, (300, 3))]
    a = merge_trees(trees, 6)
    b = merge_trees(list(reversed(trees)), 6)
    assert a == b


def test_pairs_match_an_independent_kd_tree_and_groups_a_plain_greedy_on_100k_trees():
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 3000, (100_000, 2))
    diameters = rng.uniform(3, 12, 100_000).round(1)  # many ties: the tie order must be the canonical one
    started = time.perf_counter()
    a, b = close_pairs(points, 10.0)
    seeds = seed_groups(points, diameters, 10.0)
    elapsed = time.perf_counter() - started
    kd = cKDTree(points)
    expected = kd.query_pairs(10.0 - 1e-12, output_type="ndarray")
    assert {tuple(p) for p in np.stack([a, b], 1).tolist()} == {tuple(sorted(p)) for p in expected.tolist()}
    # An independent greedy: a k-d tree ball query per seed, largest crown first.
    reference = np.full(len(points), -1)
    for i in np.lexsort((np.arange(len(points)), points[:, 0], points[:, 1], -diameters)).tolist():
        if reference[i] < 0:
            near = np.array(kd.query_ball_point(points[i], min(10.0, diameters[i] / 2) - 1e-12), dtype=np.int64)
            reference[near[reference[near] < 0]] = i
    assert np.array_equal(seeds, reference)
    print(f"100k trees: pairs + seed groups in {elapsed:.3f} s")


SPACING = st.floats(2, 20)


@st.composite
def forests(draw):
    """Crowns on a jittered grid of 2-20 m spacing, some of them duplicated (one tree detected twice)."""
    spacing = draw(SPACING)
    rows, cols = draw(st.integers(1, 12)), draw(st.integers(1, 12))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    trees = []
    for r in range(rows):
        for c in range(cols):
            x, y = c * spacing + rng.uniform(-1, 1), r * spacing + rng.uniform(-1, 1)
            d = float(rng.uniform(3, 15))
            trees.append(tree(x, y, d))
            if rng.uniform() < 0.2:
                trees.append(tree(x + rng.uniform(-1, 1), y + rng.uniform(-1, 1), float(rng.uniform(3, 15))))
    return trees


@given(trees=forests(), threshold=st.floats(0, 30), bounds=st.sampled_from([(3.0, 15.0), (3.0, 10.0), (5.0, 40.0)]))
@example(trees=[tree(3.0 * i, 0, 8) for i in range(40)], threshold=10.0, bounds=(3.0, 15.0))
@settings(max_examples=150, deadline=None)
def test_merge_properties(trees, threshold, bounds):
    low, high = bounds
    out = merge_trees(trees, threshold, min_diameter=low, max_diameter=high)
    assert all(low <= t.diameter <= high for t in out)
    points = np.array([[t.x, t.y] for t in trees])
    diameters = np.array([t.diameter for t in trees])
    seeds = seed_groups(points, diameters, threshold)
    for s in np.unique(seeds):
        members = points[seeds == s]
        span = max(math.dist(p, q) for p in members for q in members)
        assert span <= 2 * threshold
        others = members[np.any(members != points[s], axis=1)]
        assert (np.hypot(*(others - points[s]).T) < min(threshold, diameters[s] / 2)).all()
        assert diameters[s] == diameters[seeds == s].max()  # a seed is the largest crown of its group
    # No seed lies inside a larger seed's crown within the threshold (it would have been joined to it).
    unique = np.unique(seeds)
    for s in unique:
        d = np.hypot(*(points[unique] - points[s]).T)
        smaller = diameters[unique] < diameters[s]
        assert not (smaller & (d < min(threshold, diameters[s] / 2))).any()
    shuffled = list(reversed(trees))
    assert merge_trees(shuffled, threshold, min_diameter=low, max_diameter=high) == out


def test_merge_trees_100k_end_to_end():
    rng = np.random.default_rng(11)
    trees = [tree(float(x), float(y)) for x, y in rng.uniform(0, 5000, (100_000, 2))]
    out = merge_trees(trees, 10)
    assert 0 < len(out) < len(trees)
    assert [t.id for t in out] == list(range(1, len(out) + 1))
