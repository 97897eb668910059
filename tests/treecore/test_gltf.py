"""GLB scenes: valid glTF 2.0 by the Khronos validator, and the same placement as the OBJ writer."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from treecore.basemodels import load_model
from treecore.gltf import INSTANCING, material_colours, write_glb
from treecore.objwriter import placed_positions
from treecore.types import Tree

ROOT = Path(__file__).resolve().parents[2]
TREES = [Tree(i + 1, 7.5 * (i % 10), 9.0 * (i // 10), 2.0 + (i % 5), 0, 0, 0) for i in range(37)]


def _chunks(glb: bytes) -> tuple[dict, bytes]:
    magic, version, total = struct.unpack_from("<III", glb, 0)
    assert (magic, version, total) == (0x46546C67, 2, len(glb))
    json_length, _ = struct.unpack_from("<II", glb, 12)
    document = json.loads(glb[20 : 20 + json_length])
    bin_length, _ = struct.unpack_from("<II", glb, 20 + json_length)
    return document, glb[28 + json_length : 28 + json_length + bin_length]


def _accessor(document: dict, binary: bytes, index: int) -> np.ndarray:
    accessor = document["accessors"][index]
    view = document["bufferViews"][accessor["bufferView"]]
    width = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}[accessor["type"]]
    dtype = {5126: np.float32, 5125: np.uint32}[accessor["componentType"]]
    data = np.frombuffer(binary, dtype, accessor["count"] * width, view["byteOffset"])
    return data.reshape(accessor["count"], width)


@pytest.mark.parametrize("model", ["tree_lowpoly", "tree_detailed"])
def test_khronos_validator_finds_no_errors(tmp_path: Path, model: str) -> None:
    node = shutil.which("node")
    if node is None or not (ROOT / "node_modules" / "gltf-validator").exists():
        pytest.fail("node and node_modules/gltf-validator are needed (make test installs them)")
    mesh, mtl = load_model(model)
    for name, trees in (("some", TREES), ("none", [])):
        path = tmp_path / f"{name}.glb"
        path.write_bytes(write_glb(trees, mesh, mtl_text=mtl))
        out = subprocess.run(
            [node, str(ROOT / "tests/tools/validate_gltf.js"), str(path)], capture_output=True, text=True
        )
        assert out.returncode == 0, out.stderr
        issues = json.loads(out.stdout)
        assert issues["numErrors"] == 0, issues["messages"]


def test_instances_place_trees_like_the_obj_writer() -> None:
    mesh, mtl = load_model("tree_lowpoly")
    document, binary = _chunks(write_glb(TREES, mesh, mtl_text=mtl))
    assert document["extensionsUsed"] == [INSTANCING] and "extensionsRequired" not in document
    attributes = document["nodes"][0]["extensions"][INSTANCING]["attributes"]
    translation, rotation, scale = (
        _accessor(document, binary, attributes[k]) for k in ("TRANSLATION", "ROTATION", "SCALE")
    )
    assert len(translation) == len(TREES)
    primitive = document["meshes"][0]["primitives"][0]
    base = _accessor(document, binary, primitive["attributes"]["POSITION"]).astype(np.float64)
    expected = placed_positions(TREES, mesh)  # (K, V, 3) from the OBJ writer
    for k in range(len(TREES)):
        x, y, z, w = rotation[k].astype(np.float64)
        # Rotation matrix of the unit quaternion (here about Y only).
        matrix = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
        world = base @ matrix.T * scale[k] + translation[k]
        # Same point set as the OBJ tree (glTF splits vertices by normal, so compare nearest points; float32).
        gaps = np.linalg.norm(world[:, None, :] - expected[k][None, :, :], axis=2)
        assert gaps.min(axis=0).max() < 1e-4 * (1 + np.abs(expected[k]).max())
        assert gaps.min(axis=1).max() < 1e-4 * (1 + np.abs(expected[k]).max())


def test_materials_take_the_mtl_colours() -> None:
    mesh, mtl = load_model("tree_lowpoly")
    document, _ = _chunks(write_glb(TREES[:1], mesh, mtl_text=mtl))
    colours = material_colours(mtl)
    for material in document["materials"]:
        assert material["pbrMetallicRoughness"]["baseColorFactor"][:3] == list(colours[material["name"]])


def test_glb_is_orders_of_magnitude_smaller_than_obj() -> None:
    from treecore.objwriter import iter_obj_parts

    mesh, mtl = load_model("tree_lowpoly")
    trees = TREES * 30
    obj_size = sum(len(p) for p in iter_obj_parts(trees, mesh, mtl_name="s.mtl"))
    assert len(write_glb(trees, mesh, mtl_text=mtl)) * 20 < obj_size
