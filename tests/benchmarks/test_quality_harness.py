import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

spec = importlib.util.spec_from_file_location("quality", Path(__file__).parents[2] / "benchmarks" / "quality.py")
quality = importlib.util.module_from_spec(spec)
sys.modules["quality"] = quality  # dataclasses look their module up
spec.loader.exec_module(quality)


def test_matching_is_one_to_one_and_needs_the_centre_inside_the_box():
    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10]], float)
    centres = np.array([[5, 5], [6, 6], [25, 5], [50, 50]], float)
    score = quality.match(centres, boxes)
    assert (score.detected, score.truth, score.matched) == (4, 2, 2)
    assert score.precision == 0.5 and score.recall == 1.0 and score.f1 == pytest.approx(2 / 3)


def test_optimal_not_greedy_assignment():
    # centre A lies in both boxes, B only in the first: the optimum matches both.
    boxes = np.array([[0, 0, 10, 10], [4, 0, 14, 10]], float)
    centres = np.array([[5, 5], [1, 5]], float)
    assert quality.match(centres, boxes).matched == 2


def test_empty_inputs_score_zero():
    assert quality.match(np.zeros((0, 2)), np.array([[0, 0, 1, 1]], float)).f1 == 0.0


def test_voc_boxes_are_read():
    box = "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox>"
    xml = f"<annotation><object>{box}</object></annotation>"
    boxes, dead = quality.read_boxes(xml)
    assert boxes.tolist() == [[1, 2, 3, 4]] and dead.tolist() == [False]
