"""Global merge: trees of all tiles in one stable list, crowns closer than cluster_threshold joined."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from treecore.types import Tree

_FIELDS = ("x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter")


def _as_array(trees: Iterable[Tree]) -> np.ndarray:
    rows = [tuple(getattr(t, f) for f in _FIELDS) for t in trees]
    return np.array(rows, dtype=np.float64).reshape(len(rows), len(_FIELDS))


def close_pairs(points: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """All pairs of points closer than `threshold`, found with a uniform grid (no O(n^2) scan).

    Args:
        points: (N, 2) float64 coordinates.
        threshold: distance; pairs with distance < threshold are returned.

    Returns:
        (a, b): int64 index arrays with a < b.
    """
    n = len(points)
    if n < 2 or threshold <= 0:
        empty = np.zeros(0, np.int64)
        return empty, empty
    cell = np.floor(points / threshold).astype(np.int64)
    cell -= cell.min(axis=0)
    span = int(cell[:, 0].max()) + 3
    key = (cell[:, 1] + 1) * span + (cell[:, 0] + 1)
    order = np.argsort(key, kind="stable")
    sorted_key = key[order]
    found_a, found_b = [], []
    # Half of the 3x3 neighbourhood (plus the cell itself) visits every unordered pair once.
    for dy, dx in ((0, 0), (0, 1), (1, -1), (1, 0), (1, 1)):
        target = key + dy * span + dx
        lo = np.searchsorted(sorted_key, target, side="left")
        hi = np.searchsorted(sorted_key, target, side="right")
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            continue
        a = np.repeat(np.arange(n), counts)
        starts = np.repeat(lo - np.concatenate(([0], np.cumsum(counts)[:-1])), counts)
        b = order[starts + np.arange(total)]
        if (dy, dx) == (0, 0):
            keep = a < b
            a, b = a[keep], b[keep]
        d = points[a] - points[b]
        near = (d * d).sum(axis=1) < threshold * threshold
        found_a.append(np.minimum(a[near], b[near]))
        found_b.append(np.maximum(a[near], b[near]))
    if not found_a:
        empty = np.zeros(0, np.int64)
        return empty, empty
    return np.concatenate(found_a), np.concatenate(found_b)


def cluster_labels(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Connected components of the graph with edges (a, b): transitive clusters.

    Args:
        n: number of nodes.
        a: (E,) int64 edge ends.
        b: (E,) int64 edge ends.

    Returns:
        (n,) int64 label per node: the smallest node index of its cluster.
    """
    labels = np.arange(n, dtype=np.int64)
    while True:
        low = np.minimum(labels[a], labels[b])
        before = labels.copy()
        np.minimum.at(labels, a, low)
        np.minimum.at(labels, b, low)
        labels = labels[labels]  # pointer jumping
        if np.array_equal(labels, before):
            return labels


def merge_trees(trees: Iterable[Tree], cluster_threshold: float) -> list[Tree]:
    """Concatenate trees from any number of tiles, join crowns closer than the threshold, number them.

    A cluster (crowns joined transitively, centre distance < `cluster_threshold` metres) becomes one
    tree: its centre is the crown-area-weighted mean of the centres, its diameter the equivalent
    diameter of the summed crown areas. The result is sorted by (y, x, diameter) and numbered 1..N,
    so it does not depend on the order of the input (or on how the image was tiled).

    Args:
        trees: trees with any ids (tile outputs use 0).
        cluster_threshold: metres; 0 disables merging.

    Returns:
        The merged, sorted trees with ids 1..N.
    """
    data = _as_array(trees)
    if len(data) == 0:
        return []
    data = data[np.lexsort((data[:, 2], data[:, 0], data[:, 1]))]
    a, b = close_pairs(data[:, 0:2], cluster_threshold)
    if len(a):
        labels = cluster_labels(len(data), a, b)
        data = _join_clusters(data, labels)
        data = data[np.lexsort((data[:, 2], data[:, 0], data[:, 1]))]
    return [Tree(i + 1, *(float(v) for v in row)) for i, row in enumerate(data.tolist())]


def _join_clusters(data: np.ndarray, labels: np.ndarray) -> np.ndarray:
    roots, inverse = np.unique(labels, return_inverse=True)
    weight = data[:, 2] ** 2  # crown area up to a constant
    weight_px = data[:, 5] ** 2
    total = np.bincount(inverse, weights=weight, minlength=len(roots))
    total_px = np.bincount(inverse, weights=weight_px, minlength=len(roots))
    out = np.empty((len(roots), data.shape[1]), np.float64)
    for column in (0, 1):
        out[:, column] = np.bincount(inverse, weights=data[:, column] * weight, minlength=len(roots)) / total
    for column in (3, 4):
        out[:, column] = np.bincount(inverse, weights=data[:, column] * weight_px, minlength=len(roots)) / total_px
    out[:, 2] = np.sqrt(total)
    out[:, 5] = np.sqrt(total_px)
    # A tree alone in its cluster keeps its values bit for bit.
    sizes = np.bincount(inverse, minlength=len(roots))
    alone = sizes[inverse] == 1
    out[inverse[alone]] = data[alone]
    return out
