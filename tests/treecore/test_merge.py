import time

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from treecore.merge import close_pairs, cluster_labels, merge_trees
from treecore.types import Tree


def tree(x, y, d=4.0):
    return Tree(0, x, y, d, x * 10, y * 10, d * 10)


def test_no_merge_when_threshold_is_zero_and_ids_follow_sorted_order():
    trees = [tree(5, 5), tree(1, 1), tree(3, 1)]
    out = merge_trees(trees, 0)
    assert [(t.id, t.x, t.y) for t in out] == [(1, 1, 1), (2, 3, 1), (3, 5, 5)]
    assert out[0] == Tree(1, 1, 1, 4.0, 10, 10, 40.0)  # untouched values


def test_merge_is_transitive_and_area_weighted():
    # a-b 8 m apart and b-c 8 m apart, a-c 16 m: one cluster with threshold 10.
    out = merge_trees([tree(0, 0, 2), tree(8, 0, 2), tree(16, 0, 4), tree(50, 50)], 10)
    assert len(out) == 2
    joined = out[0]
    assert joined.diameter == np.sqrt(4 + 4 + 16)
    assert np.isclose(joined.x, (0 * 4 + 8 * 4 + 16 * 16) / 24)
    assert out[1].x == 50 and out[1].id == 2


def test_exactly_at_threshold_is_not_merged():
    assert len(merge_trees([tree(0, 0), tree(10, 0)], 10)) == 2


def test_input_order_does_not_matter():
    rng = np.random.default_rng(5)
    trees = [tree(float(x), float(y), float(d)) for x, y, d in rng.uniform(1, 100, (300, 3))]
    a = merge_trees(trees, 6)
    b = merge_trees(list(reversed(trees)), 6)
    assert a == b


def test_pairs_and_clusters_match_an_independent_kd_tree_on_100k_trees():
    rng = np.random.default_rng(7)
    points = rng.uniform(0, 3000, (100_000, 2))
    started = time.perf_counter()
    a, b = close_pairs(points, 10.0)
    labels = cluster_labels(len(points), a, b)
    elapsed = time.perf_counter() - started
    expected = cKDTree(points).query_pairs(10.0 - 1e-12, output_type="ndarray")
    assert {tuple(p) for p in np.stack([a, b], 1).tolist()} == {tuple(sorted(p)) for p in expected.tolist()}
    graph = coo_matrix((np.ones(len(a)), (a, b)), shape=(len(points), len(points)))
    count, reference = connected_components(graph, directed=False)
    assert len(np.unique(labels)) == count
    # Same partition: each of our clusters maps to exactly one reference cluster.
    assert len({(x, y) for x, y in zip(labels.tolist(), reference.tolist(), strict=True)}) == count
    print(f"100k trees: pairs + clusters in {elapsed:.3f} s")


def test_merge_trees_100k_end_to_end():
    rng = np.random.default_rng(11)
    trees = [tree(float(x), float(y)) for x, y in rng.uniform(0, 5000, (100_000, 2))]
    out = merge_trees(trees, 10)
    assert 0 < len(out) < len(trees)
    assert [t.id for t in out] == list(range(1, len(out) + 1))
