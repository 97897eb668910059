import numpy as np
import pytest

from treecore.errors import InvalidMeshError
from treecore.mesh import load_obj, load_obj_file, normalised

SQUARE = """# a unit square, all index forms
mtllib sq.mtl
o square
v 0 0 0
v 1 0 0
v 1 0 1
v 0 0 1 1.0
vt 0 0
vt 1 0
vt 1 1 0
vn 0 1 0
g g1
usemtl leaf
f 1/1/1 2/2/1 3/3/1
usemtl bark
f -4//-1 -2//-1 \\
  -1//-1
f 1 3 4
f 1/1 3/3 4/2
"""


def test_every_index_form_and_negative_indices():
    mesh = load_obj(SQUARE)
    assert mesh.positions.shape == (4, 3) and mesh.texcoords.shape == (3, 2) and mesh.normals.shape == (1, 3)
    assert mesh.material_names == ("leaf", "bark") and mesh.mtllib == "sq.mtl"
    assert mesh.corners.shape == (4, 3, 3)
    assert mesh.corners[1].tolist() == [[0, -1, 0], [2, -1, 0], [3, -1, 0]]
    assert mesh.corners[2, :, 1].tolist() == [-1, -1, -1]
    assert mesh.materials.tolist() == [0, 1, 1, 1]


def test_polygons_are_fan_triangulated():
    mesh = load_obj("v 0 0 0\nv 1 0 0\nv 1 0 1\nv 0 0 1\nv -1 0 0\nf 1 2 3 4 5\n")
    assert mesh.corners[:, :, 0].tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]
    assert mesh.material_names == ("default",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("v 0 0 0\nv 1 0 0\nf 1 2 3\n", "line 3: vertex index 3 out of range"),
        ("v 0 0\n", "line 1: expected 3 to 7 numbers"),
        ("v 0 0 x\n", "line 1: not a number"),
        ("v 0 0 nan\n", "line 1: non-finite"),
        ("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2\n", "line 4: a face needs at least 3 corners"),
        ("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1/1 2/1 3/1\n", "line 4: texture index 1 out of range"),
        ("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 0\n", "line 4: vertex index 0 out of range"),
        ("v 0 0 0\nbogus 1\n", "line 2: unknown statement 'bogus'"),
        ("v 0 0 0\n", "has no faces"),
        ("v 0 0 0\nv 1 0 0\nv 1 1 0\nf 1 2 a\n", "line 4: vertex index 'a' is not a whole number"),
    ],
)
def test_malformed_obj_names_the_line(text, message):
    with pytest.raises(InvalidMeshError, match=message):
        load_obj(text)


def test_normalised_to_unit_crown_at_origin(tmp_path):
    path = tmp_path / "big.obj"
    path.write_text("v 10 5 10\nv 14 5 10\nv 12 9 12\nf 1 2 3\n")
    mesh = normalised(load_obj_file(path))
    assert mesh.name == "big"
    np.testing.assert_allclose(mesh.positions, [[-0.5, 0, -0.25], [0.5, 0, -0.25], [0, 1, 0.25]])
    with pytest.raises(InvalidMeshError, match="cannot read"):
        load_obj_file(tmp_path / "missing.obj")
