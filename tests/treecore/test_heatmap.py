"""The heatmap method: the packaged network, resampling to the working resolution, the colour rule, tiles."""

import hashlib
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.treecore.conftest import Disc, draw_scene
from treecore import heatmap
from treecore.detect import detect_trees
from treecore.heatmap import MODEL_PATH, HeatmapModel, heatmap_crowns, packaged_model
from treecore.resample import Resampling, resampling_for
from treecore.tiles import halo_pixels
from treecore.types import DEFAULT_METHOD, METHODS, DetectionParams, Window

ROOT = Path(__file__).resolve().parents[2]


def test_packaged_network_is_small_and_gives_three_maps():
    assert MODEL_PATH.stat().st_size < 100_000
    maps = packaged_model().maps(np.full((41, 56, 3), 120, np.uint8))
    assert maps.shape == (3, 21, 28) and maps.dtype == np.float32  # one value per 2 x 2 working pixels
    assert np.isfinite(maps).all()


def test_packaged_network_is_the_one_the_training_script_records():
    recorded = (ROOT / "training" / "tree_centres.sha256").read_text().split()[0]
    assert hashlib.sha256(MODEL_PATH.read_bytes()).hexdigest() == recorded


def test_heatmap_is_a_method_and_the_default():
    assert "heatmap" in METHODS and DEFAULT_METHOD in METHODS
    assert DetectionParams().method == DEFAULT_METHOD


@pytest.mark.parametrize(
    ("mpp", "down", "up", "working"),
    [(0.1, 4, 1, 0.4), (0.05, 8, 1, 0.4), (0.13, 10, 3, 0.4333), (0.2, 2, 1, 0.4), (0.3, 4, 3, 0.4)]
    + [(0.5, 1, 1, 0.5), (0.6, 1, 1, 0.6), (1.0, 1, 2, 0.5), (2.0, 1, 4, 0.5)],
)
def test_any_ground_resolution_maps_into_the_working_band(mpp, down, up, working):
    rs = resampling_for(mpp, heatmap.WORKING_TARGET_M, heatmap.WORKING_COARSEST_M)
    assert (rs.down, rs.up) == (down, up)
    assert rs.working_mpp(mpp) == pytest.approx(working, abs=1e-4)


def test_windows_are_grown_to_whole_blocks_inside_the_image():
    rs = Resampling(down=4)
    assert rs.aligned(Window(5, 9, 13, 14), 30, 22) == Window(4, 8, 16, 16)
    assert rs.aligned(Window(0, 0, 30, 22), 30, 22) == Window(0, 0, 28, 20)  # partial blocks dropped
    assert rs.to_working(np.zeros((8, 12, 3), np.uint8)).shape == (2, 3, 3)
    assert Resampling(up=2).to_working(np.zeros((8, 12, 3), np.uint8)).shape == (16, 24, 3)
    # 4 -> 3: each working pixel the exact area mean of the input pixels it covers
    ramp = np.arange(12, dtype=np.uint8).reshape(1, 12, 1).repeat(4, axis=0).repeat(3, axis=2) * 12
    out = Resampling(down=4, up=3).to_working(ramp)
    assert out.shape == (3, 9, 3)
    assert out[0, :3, 0].tolist() == [
        round((3 * 0 + 1 * 12) / 4),
        round((2 * 12 + 2 * 24) / 4),
        round((24 + 3 * 36) / 4),
    ]
    assert rs.to_input(np.array([0.5])).tolist() == [2.0]


class FakeNetwork(HeatmapModel):
    """A network stand-in whose maps are drawn by hand: a peak per (row, col, diameter_px, dead), working pixels."""

    def __init__(self, peaks):
        self.peaks = peaks

    def maps(self, rgb):
        s = heatmap.NET_STRIDE
        h, w = -(-rgb.shape[0] // s), -(-rgb.shape[1] // s)
        out = np.zeros((3, h, w), np.float32)
        out[0] = -10
        for row, col, diameter, dead in self.peaks:
            row, col = row // s, col // s
            out[0, row, col] = 5.0
            out[1, row, col] = diameter / heatmap.SIZE_UNIT_PX
            out[2, row, col] = 5.0 if dead else -5.0
        return out


GREY = (150, 150, 150)  # saturation 0: outside the default saturation range, value 150 inside


def _two_crowns(colour_of_second):
    # 0.4 m per pixel (no resampling at this working resolution): crowns of 12 px = 4.8 m
    image = np.empty((60, 100, 3), np.uint8)
    image[:] = (150, 120, 90)
    yy, xx = np.mgrid[0:60, 0:100]
    image[np.hypot(yy - 30, xx - 24) <= 6] = (40, 150, 40)
    image[np.hypot(yy - 30, xx - 76) <= 6] = colour_of_second
    return image


def _found(image, network, **kw):
    p = DetectionParams(real_width=image.shape[1] * 0.4, real_height=image.shape[0] * 0.4, method="heatmap", **kw)
    crowns = heatmap_crowns(image, Window(0, 0, image.shape[1], image.shape[0]), p, network)
    return sorted(round(x) for x, _ in crowns.centres.tolist())


def test_live_crowns_need_their_colour_in_the_hsv_range():
    image = _two_crowns(GREY)
    live = FakeNetwork([(30, 24, 12, False), (30, 76, 12, False)])
    assert _found(image, live) == [24]  # the grey crown is outside sat_min 40
    assert _found(image, live, hue_min=0, sat_min=0) == [24, 76]  # grey has hue 0
    assert _found(image, live, hue_min=70) == []  # green (hue 60) leaves the range


def test_dead_crowns_are_judged_by_value_alone():
    image = _two_crowns(GREY)
    network = FakeNetwork([(30, 24, 12, False), (30, 76, 12, True)])
    assert _found(image, network) == [24, 76]  # the grey snag is found with the green defaults
    assert _found(image, network, hue_min=70, hue_max=80) == [76]  # hue does not apply to a snag
    assert _found(image, network, val_max=100) == []  # value does, to both


def test_the_crown_diameter_is_read_at_the_peak():
    image = _two_crowns((40, 150, 40))
    network = FakeNetwork([(30, 24, 10, False), (30, 76, 30, False)])
    p = DetectionParams(real_width=40, real_height=24, method="heatmap", cluster_threshold=0)
    trees = detect_trees(image, p, model=network).trees
    assert [round(t.diameter, 6) for t in trees] == [4.0, 12.0]
    small = DetectionParams(real_width=40, real_height=24, method="heatmap", cluster_threshold=0, max_diameter=10)
    assert [t.pixel_x for t in detect_trees(image, small, model=network).trees] == [24.5]


def textured_scene(h, w, discs, seed):
    """Sunlit crowns with needle texture and a shadow, on noisy grass and soil: what the network was trained on."""
    rng = np.random.default_rng(seed)
    image = draw_scene(h, w, [], noise=18, seed=seed)
    ground = rng.random((h, w)) < 0.3
    image[ground] = (image[ground] * np.array([0.6, 1.0, 0.55])).astype(np.uint8)
    shaded = draw_scene(h, w, [Disc(d.col + d.radius // 3, d.row + d.radius // 3, d.radius) for d in discs])
    image[(shaded != draw_scene(1, 1, [])[0, 0]).any(axis=2)] //= 3
    crowns = draw_scene(h, w, discs, noise=30, seed=seed + 1, shade=True)
    inside = (draw_scene(h, w, discs) != draw_scene(1, 1, [])[0, 0]).any(axis=2)
    image[inside] = crowns[inside]
    return image


discs_strategy = st.lists(
    st.builds(Disc, st.integers(-10, 330), st.integers(-10, 250), st.integers(4, 30)), min_size=0, max_size=30
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    discs=discs_strategy,
    size=st.tuples(st.integers(40, 240), st.integers(40, 320)),
    mpp=st.sampled_from([0.1, 0.13, 0.25, 0.5, 1.0]),
    grid=st.one_of(
        st.builds(lambda n: {"n_tiles": n}, st.integers(2, 9)),
        st.builds(lambda s: {"tile_size": s}, st.integers(9, 150)),
    ),
    cluster=st.sampled_from([0.0, 10.0]),
    seed=st.integers(0, 1000),
)
def test_tiles_never_change_the_heatmap_trees(discs, size, mpp, grid, cluster, seed):
    h, w = size
    image = textured_scene(h, w, discs, seed)
    p = DetectionParams(
        real_width=w * mpp, real_height=h * mpp, min_diameter=0.5, max_diameter=15, cluster_threshold=cluster
    )
    assert p.method == "heatmap"
    whole = detect_trees(image, p)
    tiled = detect_trees(image, p, **grid)
    event(f"mpp {mpp}, trees: {min(len(whole.trees), 10) // 5 * 5}+, tiles: {min(tiled.tile_count, 8) // 4 * 4}+")
    assert tiled.trees == whole.trees


@pytest.mark.parametrize("mpp", [0.1, 0.3, 0.5, 1.0])
def test_tiles_never_change_the_heatmap_trees_on_a_dense_scene(mpp):
    rng = np.random.default_rng(7)
    h, w = 500, 640
    discs = [
        Disc(int(c), int(r), int(k))
        for c, r, k in zip(rng.integers(0, w, 300), rng.integers(0, h, 300), rng.integers(5, 25, 300), strict=True)
    ]
    image = textured_scene(h, w, discs, 3)
    p = DetectionParams(real_width=w * mpp, real_height=h * mpp, min_diameter=0.5, cluster_threshold=0)
    whole = detect_trees(image, p)
    assert len(whole.trees) > 20
    for grid in ({"n_tiles": 2}, {"n_tiles": 7}, {"tile_size": 37}, {"tile_size": 201}):
        assert detect_trees(image, p, **grid).trees == whole.trees, grid


def test_halo_covers_the_network_and_the_alignment():
    for mpp in (0.05, 0.1, 0.3, 0.5, 1.0, 3.0):
        p = DetectionParams(real_width=1000 * mpp, real_height=1000 * mpp)
        rs = heatmap.resampling(p, (1000, 1000))
        assert halo_pixels(p, (1000, 1000)) >= math.ceil(heatmap.NET_RADIUS_PX * rs.down / rs.up) + rs.down


@pytest.mark.parametrize(("h", "w", "mpp"), [(3, 3, 0.1), (1, 7, 0.5), (2, 2, 1.0), (9, 5, 0.3)])
def test_tiny_images_give_no_error(h, w, mpp):
    image = np.full((h, w, 3), (40, 150, 40), np.uint8)
    trees = detect_trees(image, DetectionParams(real_width=w * mpp, real_height=h * mpp), n_tiles=2).trees
    assert all(0 <= t.pixel_x <= w and 0 <= t.pixel_y <= h for t in trees)
