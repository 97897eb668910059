import json
import subprocess
import sys

import cv2

from tests.treecore.conftest import Disc, draw_scene, encode
from treecore.__main__ import main


def test_detect_writes_json_and_overlay(tmp_path, capsys):
    image = draw_scene(200, 300, [Disc(50, 50, 20), Disc(200, 120, 25)])
    src = tmp_path / "tile.png"
    src.write_bytes(encode(image))
    out, overlay = tmp_path / "trees.json", tmp_path / "overlay.png"
    code = main(
        [
            "detect", str(src), "--real-width", "30", "--real-height", "20", "--tiles", "3",
            "--cluster-threshold", "0", "-o", str(out), "--overlay", str(overlay),
        ]
    )  # fmt: skip
    assert code == 0
    report = json.loads(out.read_text())
    assert report["total_trees"] == 2 and report["tile_count"] == 3
    assert report["image_width"] == 300 and report["meters_per_pixel_x"] == 0.1
    assert set(report["trees"][0]) == {"id", "x", "y", "diameter", "pixel_x", "pixel_y", "pixel_diameter"}
    assert report["parameters"]["hue_min"] == 35 and report["parameters"]["min_diameter"] == 3.0
    drawn = cv2.imread(str(overlay))
    assert drawn.shape == (200, 300, 3) and (drawn != cv2.cvtColor(image, cv2.COLOR_RGB2BGR)).any()
    err = capsys.readouterr().err
    assert "2 trees" in err and "3 tiles" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["overlay.png", "tile.png", "trees.json"]


def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    out = tmp_path / "trees.json"
    assert main(["detect", str(bad), "-o", str(out)]) == 2
    assert "not a PNG, JPEG or TIFF" in capsys.readouterr().err
    assert main(["detect", str(tmp_path / "missing.png"), "-o", str(out)]) == 2
    good = tmp_path / "good.png"
    good.write_bytes(encode(draw_scene(20, 20, [])))
    assert main(["detect", str(good), "--hue-min", "90", "--hue-max", "10", "-o", str(out)]) == 2
    assert "hue_min (90) must not exceed hue_max (10)" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.png", "notes.png"]


def test_module_entry_point_runs(tmp_path):
    src = tmp_path / "t.png"
    src.write_bytes(encode(draw_scene(60, 60, [Disc(30, 30, 20)])))
    done = subprocess.run(
        [sys.executable, "-m", "treecore", "detect", str(src), "--real-width", "6", "--real-height", "6"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert json.loads(done.stdout)["total_trees"] == 1


def test_one_tile_and_one_tree_are_singular(tmp_path, capsys):
    src = tmp_path / "t.png"
    src.write_bytes(encode(draw_scene(60, 60, [Disc(30, 30, 20)])))
    out = str(tmp_path / "o.json")
    assert (
        main(["detect", str(src), "--real-width", "6", "--real-height", "6", "--method", "watershed", "-o", out]) == 0
    )
    assert ": 1 tree in 60 x 60 px (6 x 6 m, 1 tile, watershed)" in capsys.readouterr().err
