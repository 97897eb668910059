import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from treecore.errors import InvalidParametersError
from treecore.tiles import grid_for, halo_pixels, owned, plan_tiles
from treecore.types import DetectionParams


@settings(max_examples=60, deadline=None)
@given(
    h=st.integers(1, 300),
    w=st.integers(1, 300),
    n=st.integers(1, 16),
    halo=st.integers(0, 40),
)
def test_cores_cover_the_image_exactly_once(h, w, n, halo):
    tiles = plan_tiles((h, w, 3), n_tiles=n, halo=halo)
    cover = np.zeros((h, w), np.int32)
    for tile in tiles:
        core, outer = tile.core, tile.halo
        cover[core.y0 : core.y1, core.x0 : core.x1] += 1
        assert outer.x0 == max(0, core.x0 - halo) and outer.y1 == min(h, core.y1 + halo)
    assert (cover == 1).all()
    assert [t.index for t in tiles] == list(range(len(tiles)))


def test_tile_size_bounds_the_core():
    tiles = plan_tiles((1000, 700), tile_size=256, halo=10)
    assert len(tiles) == 4 * 3
    assert max(t.core.width for t in tiles) <= 256 and max(t.core.height for t in tiles) <= 256


def test_grid_is_as_square_as_possible():
    assert grid_for(4, 1000, 1000) == (2, 2)
    assert grid_for(2, 100, 1000) == (1, 2)
    assert grid_for(6, 1000, 1500) == (2, 3)
    assert grid_for(5, 3, 3) == (3, 1)  # cannot cut 3 pixels into 5: fewer tiles


@pytest.mark.parametrize("kwargs", [{}, {"n_tiles": 2, "tile_size": 5}, {"n_tiles": 0}, {"tile_size": 0}])
def test_bad_plans_are_refused(kwargs):
    with pytest.raises(InvalidParametersError):
        plan_tiles((10, 10), halo=1, **kwargs)
    with pytest.raises(InvalidParametersError):
        plan_tiles((10, 10), halo=-1, n_tiles=1)


def test_ownership_is_unique_for_centres():
    tiles = plan_tiles((10, 10), n_tiles=4, halo=3)
    for x in np.arange(0.5, 10, 0.5):
        for y in np.arange(0.5, 10, 0.5):
            assert sum(owned(t, x, y) for t in tiles) == 1


def test_halo_covers_the_largest_crown():
    params = DetectionParams(real_width=100, real_height=100)
    largest_crown_px = 15 / (100 / 1000)
    for method in ("legacy", "watershed"):
        p = DetectionParams(method=method)
        assert halo_pixels(p, (1000, 1000)) > largest_crown_px
    assert halo_pixels(params, (1000, 1000)) >= 2 * largest_crown_px / 2
