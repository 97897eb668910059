import warnings
from pathlib import Path

import numpy as np
import pytest

from treecore.mesh import load_obj, load_obj_file, normalised
from treecore.objwriter import format_obj_part, iter_obj_parts, placed_positions, rotation_step, vertex_lines, write_obj
from treecore.types import Tree

MODELS = Path(__file__).parents[2] / "tree_model" / "models"


@pytest.fixture(scope="module")
def base():
    return normalised(load_obj_file(MODELS / "tree_lowpoly.obj"))


def forest(n):
    return [Tree(i + 1, 7.0 * (i % 13), 5.0 * (i // 13), 2.0 + (i % 5), 0, 0, 0) for i in range(n)]


def test_scene_reads_back_with_our_loader_and_trimesh(tmp_path, base):
    import trimesh

    trees = forest(30)
    obj, mtl = write_obj(tmp_path / "scene.obj", trees, base, mtl_text=(MODELS / "tree_lowpoly.mtl").read_text())
    assert mtl.read_text().count("newmtl") == 2
    ours = load_obj(obj.read_text())
    v, f = len(base.positions), len(base.corners)
    assert ours.positions.shape == (30 * v, 3) and ours.corners.shape == (30 * f, 3, 3)
    assert ours.mtllib == "scene.mtl" and ours.material_names == ("bark", "foliage")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mesh = trimesh.load(obj, force="mesh", process=False)
    assert len(mesh.vertices) == 30 * v and len(mesh.faces) == 30 * f
    height = base.positions[:, 1].max()
    assert np.allclose(mesh.bounds[:, 1], [0.0, height * max(t.diameter for t in trees)], atol=1e-3)
    for k, tree in enumerate(trees):
        block = ours.positions[k * v : (k + 1) * v]
        assert np.isclose(block[:, 1].min(), 0, atol=1e-3)
        assert np.isclose(block[:, 1].max(), height * tree.diameter, atol=1e-3)
        # the trunk's base ring is centred on the tree: X = x, Z = y
        trunk_base = block[np.abs(block[:, 1]) < 1e-6]
        assert np.allclose(trunk_base.mean(axis=0)[[0, 2]], [tree.x, tree.y], atol=1e-3)
        crown = block[:, [0, 2]] - [tree.x, tree.y]
        assert np.linalg.norm(crown, axis=1).max() <= tree.diameter / 2 + 1e-3
    assert obj.read_text().count("\no tree_") == 30


def test_parts_are_independent_and_concatenate_to_the_whole(base):
    trees = forest(25)
    whole = b"".join(iter_obj_parts(trees, base, mtl_name="s.mtl", trees_per_part=25))
    pieces = b"".join(iter_obj_parts(trees, base, mtl_name="s.mtl", trees_per_part=4))
    assert whole == pieces
    assert format_obj_part(trees[10:15], base, first_index=10) in whole
    assert whole == b"".join(iter_obj_parts(trees, base, mtl_name="s.mtl", trees_per_part=7))  # same input, same bytes


def test_empty_scene_is_a_valid_model(tmp_path, base):
    obj, _ = write_obj(tmp_path / "empty.obj", [], base, mtl_text="")
    text = obj.read_text()
    assert "mtllib empty.mtl" in text and "\nf " not in text and "\nv " not in text


def test_rotation_comes_from_the_id(base):
    # Pinned: a change of the hash changes every scene file (same input, same file).
    assert [rotation_step(i) for i in (1, 2, 3, 1000)] == [39, 15, 54, 2]
    assert len({rotation_step(i) for i in range(1, 200)}) > 30
    a = format_obj_part([Tree(1, 0, 0, 3, 0, 0, 0)], base, first_index=0)
    b = format_obj_part([Tree(2, 0, 0, 3, 0, 0, 0)], base, first_index=0)
    assert a.split(b"\n", 1)[1] != b.split(b"\n", 1)[1]


def test_failed_write_leaves_nothing(tmp_path, base):
    class Broken(list):
        def __getitem__(self, index):
            raise RuntimeError("source of trees failed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        write_obj(tmp_path / "s.obj", Broken(forest(3)), base, mtl_text="newmtl x\n")
    assert list(tmp_path.iterdir()) == []


def test_vertex_lines_match_percent_format() -> None:
    from treecore.objwriter import vertex_lines

    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-1000, 1000, 30_000),
            rng.uniform(-1e6, 1e6, 3_000),
            np.array([0.0, -0.0, 0.0005, -0.0005, 0.0004999, 999.9995, -999.9995, 9.9999, 1e6, -1e6, 123456.789]),
        ]
    )
    values = values[: len(values) // 3 * 3].reshape(-1, 3)
    text, starts = vertex_lines(values)
    lines = text.decode().splitlines()
    expected = ["v %.3f %.3f %.3f" % tuple(row) for row in values.tolist()]  # noqa: UP031 (the reference)
    assert len(lines) == len(expected)
    assert starts.tolist() == np.cumsum([0] + [len(line) + 1 for line in lines[:-1]]).tolist()
    same = sum(a == b for a, b in zip(lines, expected, strict=True))
    assert same >= len(lines) - 5  # only exact half-way values may round the other way
    parsed = np.array([[float(x) for x in line.split()[1:]] for line in lines])
    assert np.abs(parsed - values).max() <= 0.0005 + 1e-9
    assert all(line.startswith("v ") and line.count(" ") == 3 for line in lines)


def _reference_part(trees, mesh, first_index):
    # The same part written the plain way: "%.3f" per coordinate, "%d" per index, face by face.
    n_vertices, n_normals = len(mesh.positions), len(mesh.normals)
    positions = placed_positions(trees, mesh)
    out = []
    for k, tree in enumerate(trees):
        out.append("o tree_%d\n" % tree.id)  # noqa: UP031 (the reference)
        out.extend("v %.3f %.3f %.3f\n" % tuple(p) for p in positions[k].tolist())  # noqa: UP031
        base, step = (first_index + k) * n_vertices + 1, rotation_step(tree.id)
        for material, name in enumerate(mesh.material_names):
            faces = np.nonzero(mesh.materials == material)[0]
            if len(faces):
                out.append(f"usemtl {name}\n")
            for face in faces:
                corners = mesh.corners[face].tolist()
                out.append("f " + " ".join(f"{v + base}/{t + 1}/{n + step * n_normals + 1}" for v, t, n in corners))
                out.append("\n")
    return "".join(out).encode()


def _awkward_values():
    # Random metres of every size and sign, plus values at and next to the rounding half-way points.
    rng = np.random.default_rng(1)
    halves = (rng.integers(-2_000_000, 2_000_000, 20_000) + 0.5) / 1000
    return np.concatenate(
        [
            rng.uniform(-1000, 1000, 30_000),
            rng.uniform(-1e6, 1e6, 30_000),
            rng.uniform(-1, 1, 3_000) * 10.0 ** rng.integers(-6, 7, 3_000),
            halves,
            np.nextafter(halves, np.inf),
            np.nextafter(halves, -np.inf),
            [0.0, -0.0, 0.0005, -0.0005, 0.0004999, -0.0004999, 0.0015, 999.9995, -999.9995, 9999.9995, 0.0625],
            [9.9999, 1e-12, -1e-12, 1e6, -1e6, 999_999.9995, -999_999.9995, 123456.789, 1e6 - 0.0005, 1234.5675],
        ]
    )


def test_fast_numbers_are_exactly_percent_format() -> None:
    values = _awkward_values()
    values = values[: len(values) // 3 * 3].reshape(-1, 3)
    text, starts = vertex_lines(values)
    lines = text.decode().splitlines()
    expected = ["v %.3f %.3f %.3f" % tuple(row) for row in values.tolist()]  # noqa: UP031 (the reference)
    assert lines == expected
    assert starts.tolist() == np.cumsum([0] + [len(line) + 1 for line in lines[:-1]]).tolist()
    parsed = load_obj(text.decode() + "f 1 2 3\n").positions
    assert np.abs(parsed - values).max() <= 0.0005 + 1e-9


def test_fast_numbers_refuse_what_they_cannot_write() -> None:
    for bad in (np.nan, np.inf, -np.inf, 2e15):
        with pytest.raises(ValueError, match="not finite or not below"):
            vertex_lines(np.array([[0.0, bad, 1.0]]))


@pytest.mark.parametrize(
    ("numbers_near", "ids"),
    [
        (0, [1, 2, 3, 9, 10, 99, 100]),  # small numbers: one 4-digit word
        (10_000, [9_998, 9_999, 10_000, 10_001, 0, 7]),  # numbers cross 9,999 -> 10,000 within the part
        (10_000_000, [9_999_999, 10_000_000, 10_000_001, 1, 123_456_789]),  # ids and numbers up to 10 million
        (100_000_000, [-5, -10_000, 2**40, 5, 6, 7]),  # three words; negative and huge ids
    ],
)
def test_parts_are_exactly_the_plain_python_text(base, numbers_near, ids) -> None:
    first_index = max(0, numbers_near // len(base.positions) - len(ids) // 2)
    rng = np.random.default_rng(numbers_near)
    trees = [
        Tree(tree_id, *rng.uniform(-1e6, 1e6, 2), rng.choice([0.0005, 1.0, 2.5, 7.25]), 0, 0, 0) for tree_id in ids
    ]
    assert (base.corners >= 0).all()  # the reference writes v/vt/vn
    assert format_obj_part(trees, base, first_index=first_index) == _reference_part(trees, base, first_index)
    scene = b"".join(iter_obj_parts(trees, base, mtl_name="s.mtl", trees_per_part=2))
    assert scene.endswith(_reference_part(trees, base, first_index=0))


def test_real_scene_is_exactly_the_plain_python_text(base) -> None:
    trees = forest(300)
    assert format_obj_part(trees, base, first_index=0) == _reference_part(trees, base, 0)
