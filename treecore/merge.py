"""Global merge: trees of all tiles in one stable list, detections of one tree joined (never a forest)."""

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
    # Cells at least `threshold` wide find every close pair in the 3x3 neighbourhood; a threshold tiny next
    # to the coordinates gets wider cells, so cell numbers stay far inside int64.
    size = max(threshold, float(np.abs(points).max(initial=1.0)) / 2**28)
    cell = np.floor(points / size).astype(np.int64)
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


def seed_groups(points: np.ndarray, diameters: np.ndarray, threshold: float) -> np.ndarray:
    """Groups of detections that are one tree: each group is a seed and the detections inside its crown.

    Seeds are taken largest crown first (ties: smaller y, then smaller x, then input position); a seed
    takes every detection not yet grouped whose centre lies closer than `threshold` to the seed's centre
    AND inside the seed's crown (closer than its radius). Nothing is chained: a detection joins only a seed
    it is near, never a seed's neighbour's neighbour, so every member lies within `threshold` of its seed
    and a group spans less than 2 x threshold; two crowns that merely touch stay two trees.

    Args:
        points: (N, 2) float64 centres [x, y], metres.
        diameters: (N,) float64 crown diameters, metres.
        threshold: metres; 0 (or less) puts each detection in a group of its own.

    Returns:
        (N,) int64 index of each detection's seed (a seed is its own seed).
    """
    n = len(points)
    seed = np.arange(n, dtype=np.int64)
    a, b = close_pairs(points, threshold)
    distance = np.hypot(*(points[a] - points[b]).T)
    # Directed edges seed -> member: the member's centre lies inside the would-be seed's crown.
    ends = np.concatenate([a[distance < diameters[a] / 2], b[distance < diameters[b] / 2]])
    others = np.concatenate([b[distance < diameters[a] / 2], a[distance < diameters[b] / 2]])
    if len(ends) == 0:
        return seed
    order = np.lexsort((np.arange(n), points[:, 0], points[:, 1], -diameters))
    # Members of each would-be seed, as plain lists: the greedy pass below is inherently sequential,
    # and a Python loop over lists beats numpy slicing for the few neighbours a crown has.
    by_end = np.argsort(ends, kind="stable")
    starts = np.searchsorted(ends[by_end], np.arange(n + 1)).tolist()
    members = others[by_end].tolist()
    group = [-1] * n
    has_members = np.zeros(n, bool)
    has_members[ends] = True
    for i in order[has_members[order]].tolist():
        if group[i] >= 0:
            continue
        group[i] = i
        for j in members[starts[i] : starts[i + 1]]:
            if group[j] < 0:
                group[j] = i
    joined = np.array(group, np.int64)
    return np.where(joined >= 0, joined, seed)


def merge_trees(
    trees: Iterable[Tree],
    cluster_threshold: float,
    *,
    min_diameter: float | None = None,
    max_diameter: float | None = None,
) -> list[Tree]:
    """Concatenate trees from any number of tiles, join the detections of one tree, number them.

    Detections are grouped by `seed_groups` (largest crown first; a member lies inside its seed's crown
    and closer than `cluster_threshold` metres to its centre: no chaining, so a group is never a forest).
    A group of more than one becomes one tree: its centre is the crown-area-weighted mean of the centres, its diameter
    the equivalent diameter of the summed crown areas. No tree leaves [min_diameter, max_diameter]: a
    larger one is clipped to max_diameter (pixel diameter in proportion), a smaller one is dropped. The
    result is sorted by (y, x, diameter) and numbered 1..N, so it depends neither on the order of the
    input nor on how the image was tiled.

    Args:
        trees: trees with any ids (tile outputs use 0).
        cluster_threshold: metres; 0 disables merging.
        min_diameter: metres; None for no lower bound.
        max_diameter: metres; None for no upper bound.

    Returns:
        The merged, sorted trees with ids 1..N.
    """
    data = _as_array(trees)
    if len(data) == 0:
        return []
    data = _sorted(data)
    seeds = seed_groups(data[:, 0:2], data[:, 2], cluster_threshold)
    if not np.array_equal(seeds, np.arange(len(data))):
        data = _sorted(_join_groups(data, seeds))
    data = _bounded(data, min_diameter, max_diameter)
    return [Tree(i + 1, *(float(v) for v in row)) for i, row in enumerate(data.tolist())]


def _sorted(data: np.ndarray) -> np.ndarray:
    return data[np.lexsort((data[:, 5], data[:, 4], data[:, 3], data[:, 2], data[:, 0], data[:, 1]))]


def _bounded(data: np.ndarray, min_diameter: float | None, max_diameter: float | None) -> np.ndarray:
    if max_diameter is not None:
        over = data[:, 2] > max_diameter
        if over.any():
            data = data.copy()
            data[over, 5] *= max_diameter / data[over, 2]
            data[over, 2] = max_diameter
    if min_diameter is not None:
        data = data[data[:, 2] >= min_diameter]
    return data


def _join_groups(data: np.ndarray, labels: np.ndarray) -> np.ndarray:
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
