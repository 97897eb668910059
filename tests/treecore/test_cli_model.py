import json
import re

import pytest

from treecore.__main__ import main
from treecore.basemodels import check_model_name, list_models, load_model
from treecore.errors import UnknownModelError
from treecore.mesh import load_obj


def write_trees(path, n=5):
    trees = [{"id": i + 1, "x": 4.0 * i, "y": 3.0, "diameter": 3.0} for i in range(n)]
    path.write_text(json.dumps({"trees": trees, "total_trees": n}))
    return path


def test_model_command_writes_obj_and_mtl(tmp_path, capsys):
    src = write_trees(tmp_path / "trees.json")
    assert main(["model", str(src), "-o", str(tmp_path / "scene.obj"), "--base", "tree_detailed"]) == 0
    mesh = load_obj((tmp_path / "scene.obj").read_text())
    assert len(mesh.positions) == 5 * 384 and mesh.mtllib == "scene.mtl"
    assert "newmtl foliage" in (tmp_path / "scene.mtl").read_text()
    assert "5 trees of tree_detailed" in capsys.readouterr().err


def test_users_own_obj_without_mtl(tmp_path):
    own = tmp_path / "Henkel_tree.obj"
    own.write_text("v 0 0 0\nv 2 0 0\nv 1 3 1\nusemtl leaves\nf 1 2 3\n")
    src = write_trees(tmp_path / "trees.json", 2)
    assert main(["model", str(src), "-o", str(tmp_path / "s.obj"), "--base", str(own)]) == 0
    assert "newmtl leaves" in (tmp_path / "s.mtl").read_text()


@pytest.mark.parametrize(
    ("content", "extra", "message"),
    [
        ("{not json", [], "not valid JSON"),
        ('{"trees": [{"x": 1}]}', [], r"trees\[0\]\.y is missing"),
        (
            '{"trees": [{"x": 1, "y": 1, "diameter": 1}, {"x": 1, "y": 1, "diameter": 1}]}',
            ["--max-trees", "1"],
            "more than the limit",
        ),
        ('{"trees": []}', ["--base", "nope"], "no tree model named 'nope'"),
        ('{"trees": []}', ["--base", "..hidden"], "not a valid tree model name"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, content, extra, message):
    src = tmp_path / "in.json"
    src.write_text(content)
    assert main(["model", str(src), "-o", str(tmp_path / "s.obj"), *extra]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.json"]


def test_model_names_and_listing():
    assert list_models() == ["tree_detailed", "tree_lowpoly"]
    assert check_model_name("tree_lowpoly.obj") == "tree_lowpoly"
    for bad in ("../../etc/passwd", "/etc/passwd", "a/b", "..", "%2e%2e%2fpasswd", "", "x" * 125, "a\0b"):
        with pytest.raises(UnknownModelError):
            check_model_name(bad)
    mesh, mtl = load_model("tree_lowpoly")
    assert mesh.name == "tree_lowpoly" and "newmtl bark" in mtl
