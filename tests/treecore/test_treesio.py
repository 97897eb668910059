import math

import pytest

from treecore.errors import InvalidTreesError, TooManyTreesError
from treecore.treesio import parse_trees
from treecore.types import Tree


def test_detect_response_as_it_is_and_bare_lists():
    response = {
        "trees": [{"id": 7, "x": 1, "y": 2.5, "diameter": 4, "pixel_x": 10, "pixel_y": 25, "pixel_diameter": 40}],
        "total_trees": 1,
        "image_width": 100,
        "anything": "ignored",
    }
    assert parse_trees(response, max_trees=10) == [Tree(7, 1.0, 2.5, 4.0, 10.0, 25.0, 40.0)]
    assert parse_trees([{"x": 0, "y": 0, "diameter": 1}, {"x": 3, "y": 4, "diameter": 2}], max_trees=2)[1].id == 2
    assert parse_trees({"trees": []}, max_trees=0) == []


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"total_trees": 3}, 'expected an object with a "trees" list'),
        ({"trees": "many"}, '"trees" must be a list'),
        (42, '"trees" must be a list'),
        ([5], r"trees\[0\] must be an object"),
        ([{"x": 1, "y": 2}], r"trees\[0\]\.diameter is missing"),
        ([{"x": 1, "y": 2, "diameter": 3}, {"x": "a", "y": 2, "diameter": 3}], r"trees\[1\]\.x must be a number"),
        ([{"x": math.nan, "y": 2, "diameter": 3}], r"trees\[0\]\.x must be a finite number"),
        ([{"x": 1, "y": 2, "diameter": 0}], r"trees\[0\]\.diameter must be a positive finite number"),
        ([{"x": 1, "y": 2, "diameter": math.inf}], r"trees\[0\]\.diameter must be a positive finite number"),
        ([{"x": True, "y": 2, "diameter": 1}], r"trees\[0\]\.x must be a number"),
        ([{"id": "7", "x": 1, "y": 2, "diameter": 1}], r"trees\[0\]\.id must be a whole number"),
        ([{"id": -1, "x": 1, "y": 2, "diameter": 1}], r"trees\[0\]\.id must be a whole number"),
    ],
)
def test_malformed_payloads_name_the_problem(payload, message):
    with pytest.raises(InvalidTreesError, match=message):
        parse_trees(payload, max_trees=100)


def test_too_many_trees():
    with pytest.raises(TooManyTreesError, match="3 trees is more than the limit of 2"):
        parse_trees([{"x": 0, "y": 0, "diameter": 1}] * 3, max_trees=2)
