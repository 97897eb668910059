"""Binary glTF 2.0 scenes: the base mesh stored once, placed per tree with EXT_mesh_gpu_instancing.

Same placement as the OBJ writer: X = x (east), Y up, Z = y (south), metres; each tree scaled uniformly by its
crown diameter and turned about Y by the angle of its rotation step. Viewers without the extension show one
tree at the origin (the extension is used, not required); the OBJ or zip output is the fallback for them.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from treecore.mesh import Mesh
from treecore.objwriter import ROTATION_STEPS, rotation_steps
from treecore.types import Tree

#: glTF GLB container constants.
_MAGIC, _VERSION, _JSON, _BIN = 0x46546C67, 2, 0x4E4F534A, 0x004E4942
_FLOAT, _UINT32 = 5126, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
INSTANCING = "EXT_mesh_gpu_instancing"


def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * (-len(data) % 4)


def material_colours(mtl_text: str) -> dict[str, tuple[float, float, float]]:
    """Diffuse colour (Kd, linear RGB 0-1) of each `newmtl` in an MTL text.

    Args:
        mtl_text: the MTL file.

    Returns:
        Material name -> (r, g, b); materials without Kd are left out.
    """
    colours: dict[str, tuple[float, float, float]] = {}
    current = None
    for line in mtl_text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "newmtl":
            current = " ".join(fields[1:])
        elif len(fields) >= 4 and fields[0] == "Kd" and current is not None:
            try:
                r, g, b = (min(1.0, max(0.0, float(v))) for v in fields[1:4])
            except ValueError:
                continue
            colours[current] = (r, g, b)
    return colours


def instance_transforms(trees: Sequence[Tree]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-tree translation, rotation (unit quaternion about Y) and uniform scale.

    Args:
        trees: the trees (metres).

    Returns:
        (translation (K, 3), rotation (K, 4) [x, y, z, w], scale (K, 3)), float32.
    """
    table = np.array([(t.id, t.x, t.y, t.diameter) for t in trees], np.float64).reshape(-1, 4)
    half = math.pi * rotation_steps(table[:, 0].astype(np.int64)) / ROTATION_STEPS  # half of 2*pi*step/steps
    translation = np.stack([table[:, 1], np.zeros(len(table)), table[:, 2]], axis=1)
    rotation = np.stack([np.zeros(len(table)), np.sin(half), np.zeros(len(table)), np.cos(half)], axis=1)
    scale = np.repeat(table[:, 3:4], 3, axis=1)
    return translation.astype(np.float32), rotation.astype(np.float32), scale.astype(np.float32)


class _Buffer:
    """The BIN chunk being built, with its bufferViews and accessors."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.views: list[dict[str, Any]] = []
        self.accessors: list[dict[str, Any]] = []

    def add(self, array: np.ndarray, kind: str, component: int, target: int | None = None, bounds: bool = False) -> int:
        raw = np.ascontiguousarray(array).tobytes()
        view: dict[str, Any] = {"buffer": 0, "byteOffset": len(self.data), "byteLength": len(raw)}
        if target is not None:
            view["target"] = target
        self.data += _pad(raw, b"\0")
        self.views.append(view)
        accessor: dict[str, Any] = {
            "bufferView": len(self.views) - 1,
            "componentType": component,
            "count": int(array.shape[0]),
            "type": kind,
        }
        if bounds:
            accessor["min"] = array.min(axis=0).astype(float).tolist()
            accessor["max"] = array.max(axis=0).astype(float).tolist()
        self.accessors.append(accessor)
        return len(self.accessors) - 1


def write_glb(trees: Sequence[Tree], mesh: Mesh, *, mtl_text: str = "") -> bytes:
    """One GLB: the base mesh once, one instanced node carrying every tree.

    Args:
        trees: the trees (metres).
        mesh: the normalised base mesh (crown diameter 1, base at y = 0).
        mtl_text: its MTL, for the material colours (Kd).

    Returns:
        The .glb bytes.
    """
    buffer = _Buffer()
    # glTF vertices carry one normal and one texcoord each: split the mesh's corners into unique vertices.
    corners = mesh.corners.reshape(-1, 3)
    unique, inverse = np.unique(corners, axis=0, return_inverse=True)
    attributes = {
        "POSITION": buffer.add(mesh.positions[unique[:, 0]].astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER, True)
    }
    if (unique[:, 2] >= 0).all() and len(mesh.normals):
        normals = mesh.normals[unique[:, 2]]
        normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
        attributes["NORMAL"] = buffer.add(normals.astype(np.float32), "VEC3", _FLOAT, _ARRAY_BUFFER)
    if (unique[:, 1] >= 0).all() and len(mesh.texcoords):
        uv = mesh.texcoords[unique[:, 1]] * np.array([1.0, -1.0]) + np.array([0.0, 1.0])  # OBJ v up, glTF v down
        attributes["TEXCOORD_0"] = buffer.add(uv.astype(np.float32), "VEC2", _FLOAT, _ARRAY_BUFFER)
    triangles = inverse.reshape(-1, 3).astype(np.uint32)
    colours = material_colours(mtl_text)
    materials, primitives = [], []
    for index, name in enumerate(mesh.material_names):
        chosen = triangles[mesh.materials == index]
        if not len(chosen):
            continue
        colour = colours.get(name, (0.3, 0.45, 0.25))
        materials.append(
            {"name": name, "pbrMetallicRoughness": {"baseColorFactor": [*colour, 1.0], "metallicFactor": 0.0}}
        )
        indices = buffer.add(chosen.reshape(-1), "SCALAR", _UINT32, _ELEMENT_ARRAY_BUFFER)
        primitives.append({"attributes": attributes, "indices": indices, "material": len(materials) - 1})
    node: dict[str, Any] = {"name": f"trees ({len(trees)} x {mesh.name})", "mesh": 0}
    if trees:
        translation, rotation, scale = instance_transforms(trees)
        node["extensions"] = {
            INSTANCING: {
                "attributes": {
                    "TRANSLATION": buffer.add(translation, "VEC3", _FLOAT),
                    "ROTATION": buffer.add(rotation, "VEC4", _FLOAT),
                    "SCALE": buffer.add(scale, "VEC3", _FLOAT),
                }
            }
        }
    else:
        node["scale"] = [0.0, 0.0, 0.0]  # an empty scene: the base mesh is there, but no tree is shown
    document = {
        "asset": {"version": "2.0", "generator": "tree-detection treecore.gltf"},
        "extensionsUsed": [INSTANCING],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [node],
        "meshes": [{"name": re.sub(r"[^\w.-]", "_", mesh.name), "primitives": primitives}],
        "materials": materials,
        "accessors": buffer.accessors,
        "bufferViews": buffer.views,
        "buffers": [{"byteLength": len(buffer.data)}],
    }
    json_chunk = _pad(json.dumps(document, separators=(",", ":")).encode(), b" ")
    bin_chunk = bytes(buffer.data)
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return b"".join(
        [
            struct.pack("<III", _MAGIC, _VERSION, total),
            struct.pack("<II", len(json_chunk), _JSON),
            json_chunk,
            struct.pack("<II", len(bin_chunk), _BIN),
            bin_chunk,
        ]
    )
