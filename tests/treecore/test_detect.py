import math

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.treecore.conftest import Disc, draw_scene
from treecore.detect import detect_tile, detect_trees
from treecore.errors import InvalidImageError, InvalidParametersError
from treecore.tiles import halo_pixels, plan_tiles
from treecore.types import METHODS, DetectionParams

# 10 px per metre: a 400 x 300 image covers 40 x 30 m.
SCALE = 0.1


def params(h, w, **kw):
    kw.setdefault("cluster_threshold", 0)
    return DetectionParams(real_width=w * SCALE, real_height=h * SCALE, **kw)


@pytest.mark.parametrize("method", ["legacy", "watershed"])
def test_separate_discs_give_exact_centres_and_diameters(method):
    discs = [Disc(60, 50, 20), Disc(200, 80, 30), Disc(320, 220, 25), Disc(100, 230, 16)]
    image = draw_scene(300, 400, discs)
    result = detect_trees(image, params(300, 400, method=method))
    assert result.width == 400 and result.height == 300
    assert len(result.trees) == 4
    got = sorted(result.trees, key=lambda t: t.pixel_x)
    for tree, disc in zip(got, sorted(discs, key=lambda d: d.col), strict=True):
        assert tree.pixel_x == pytest.approx(disc.col + 0.5, abs=0.01)
        assert tree.pixel_y == pytest.approx(disc.row + 0.5, abs=0.01)
        assert tree.pixel_diameter == pytest.approx(2 * disc.radius, rel=0.03)
        assert tree.x == pytest.approx(tree.pixel_x * SCALE) and tree.diameter == pytest.approx(
            tree.pixel_diameter * SCALE
        )
    assert [t.id for t in result.trees] == [1, 2, 3, 4]


def test_diameter_range_and_cluster_threshold_filter():
    discs = [Disc(60, 60, 8), Disc(200, 60, 30), Disc(240, 200, 30), Disc(300, 200, 30)]
    image = draw_scene(300, 400, discs)
    legacy = detect_trees(image, params(300, 400, method="legacy", min_diameter=3, max_diameter=7))
    # the 1.7 m disc is too small, the 6.1 m ones fit, the two overlapping ones form a 12 m-wide blob
    assert len(legacy.trees) == 1
    # 6 m crowns 6 m apart touch: two trees even with a 10 m cluster threshold (the merge joins only a
    # detection inside a larger crown, never neighbours); nothing comes out above max_diameter.
    merged = detect_trees(image, params(300, 400, method="watershed", cluster_threshold=10, max_diameter=7))
    assert len(merged.trees) == 3
    assert {round(t.pixel_y) for t in merged.trees} == {60, 200}
    assert max(t.diameter for t in merged.trees) <= 7


def test_hedge_of_ten_touching_crowns_is_ten_trees():
    radius = 22
    discs = [Disc(40 + i * 2 * radius, 100, radius) for i in range(10)]
    image = draw_scene(200, 520, discs, shade=True)
    p = params(200, 520, method="watershed")
    found = detect_trees(image, p).trees
    assert len(found) == 10
    for tree, disc in zip(found, discs, strict=True):
        assert abs(tree.pixel_x - (disc.col + 0.5)) <= 2 and abs(tree.pixel_y - (disc.row + 0.5)) <= 2
        assert tree.diameter == pytest.approx(2 * radius * SCALE, rel=0.15)
    # the legacy algorithm sees one 18 m-long region: larger than a crown, so no tree
    assert detect_trees(image, params(200, 520, method="legacy")).trees == ()


def test_hedge_of_flat_touching_discs_splits_too():
    discs = [Disc(40 + i * 40, 60, 20) for i in range(6)]
    image = draw_scene(120, 300, discs)
    assert len(detect_trees(image, params(120, 300, max_diameter=8, method="watershed")).trees) == 6


def test_no_vegetation_no_trees():
    image = draw_scene(50, 60, [])
    for method in METHODS:
        assert detect_trees(image, params(50, 60, method=method)).trees == ()


def test_tile_reads_only_its_window_and_never_writes():
    image = draw_scene(200, 300, [Disc(50, 50, 20), Disc(250, 150, 20)])
    image.setflags(write=False)
    p = params(200, 300)
    tiles = plan_tiles(image.shape, n_tiles=2, halo=halo_pixels(p, image.shape))
    owned = [detect_tile(image, t, p) for t in tiles]
    assert [len(o) for o in owned] == [1, 1]
    assert all(t.id == 0 for o in owned for t in o)


def test_bad_image_array_is_refused():
    with pytest.raises(InvalidImageError):
        detect_trees(np.zeros((10, 10), np.uint8), DetectionParams())


@pytest.mark.parametrize(
    "kwargs",
    [
        {"hue_min": 180},
        {"hue_min": 90, "hue_max": 80},
        {"sat_max": 256},
        {"val_min": -1},
        {"min_diameter": 20, "max_diameter": 10},
        {"real_width": 0},
        {"real_height": -5},
        {"real_width": math.nan},
        {"real_width": 1e12},
        {"cluster_threshold": -1},
        {"method": "magic"},
        {"hue_min": 1.5},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    with pytest.raises(InvalidParametersError):
        DetectionParams(**kwargs)


discs_strategy = st.lists(
    st.builds(Disc, st.integers(-20, 340), st.integers(-20, 260), st.integers(3, 45)), min_size=0, max_size=25
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    discs=discs_strategy,
    size=st.tuples(st.integers(60, 260), st.integers(60, 340)),
    method=st.sampled_from(["legacy", "watershed"]),
    grid=st.one_of(
        st.builds(lambda n: {"n_tiles": n}, st.integers(2, 9)),
        st.builds(lambda s: {"tile_size": s}, st.integers(17, 150)),
    ),
    noise=st.sampled_from([0, 12]),
    shade=st.booleans(),
    cluster=st.sampled_from([0.0, 2.5]),
    seed=st.integers(0, 1000),
)
def test_tiles_never_change_the_trees(discs, size, method, grid, noise, shade, cluster, seed):
    h, w = size
    image = draw_scene(h, w, discs, noise=noise, seed=seed, shade=shade)
    p = DetectionParams(
        real_width=w * 0.25,
        real_height=h * 0.25,
        min_diameter=1,
        max_diameter=12,
        cluster_threshold=cluster,
        method=method,
    )
    whole = detect_trees(image, p)
    tiled = detect_trees(image, p, **grid)
    event(f"trees: {min(len(whole.trees), 10) // 5 * 5}+, tiles: {min(tiled.tile_count, 8) // 4 * 4}+")
    assert tiled.trees == whole.trees


def test_tiles_never_change_the_trees_on_a_dense_textured_scene():
    rng = np.random.default_rng(42)
    discs = [
        Disc(int(c), int(r), int(k))
        for c, r, k in zip(rng.integers(0, 900, 400), rng.integers(0, 700, 400), rng.integers(6, 30, 400), strict=True)
    ]
    image = draw_scene(700, 900, discs, noise=25, seed=1, shade=True)
    for method in ("legacy", "watershed"):
        p = DetectionParams(
            real_width=90, real_height=70, min_diameter=1, max_diameter=8, cluster_threshold=1.5, method=method
        )
        whole = detect_trees(image, p)
        assert len(whole.trees) > 20
        for grid in ({"n_tiles": 2}, {"n_tiles": 7}, {"tile_size": 64}, {"tile_size": 333}):
            assert detect_trees(image, p, **grid).trees == whole.trees, (method, grid)
