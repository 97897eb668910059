"""Merged OBJ scenes: one base mesh placed, scaled and turned per tree, written in independent parts.

Every tree has the same vertex count, so the vertex offset of any range of trees is known before it is
written: parts are formatted independently (in parallel, if the caller likes) and concatenated in order.
Texture coordinates are written once and shared; normals are written once per rotation step.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from treecore.mesh import Mesh
from treecore.types import Tree

#: Trees are turned about Y by one of this many angles, picked from the tree id.
ROTATION_STEPS = 64
#: Trees formatted per part by default.
TREES_PER_PART = 2000


def rotation_step(tree_id: int) -> int:
    """The rotation step of a tree: a fixed hash of its id (same input, same file).

    Args:
        tree_id: the tree's id.

    Returns:
        An integer in [0, ROTATION_STEPS).
    """
    return ((tree_id * 2654435761) & 0xFFFFFFFF) * ROTATION_STEPS >> 32


def _rotations() -> np.ndarray:
    angles = 2 * math.pi * np.arange(ROTATION_STEPS) / ROTATION_STEPS
    c, s = np.cos(angles), np.sin(angles)
    zero, one = np.zeros_like(c), np.ones_like(c)
    # Rotation about Y: x' = c x + s z, z' = -s x + c z.
    return np.stack([np.stack([c, zero, s], 1), np.stack([zero, one, zero], 1), np.stack([-s, zero, c], 1)], 1)


def placed_positions(trees: Sequence[Tree], mesh: Mesh) -> np.ndarray:
    """World positions of every tree's vertices: scaled to its crown, turned, moved to (x, 0, y).

    The base mesh has crown diameter 1, so a uniform scale by the crown diameter gives the crown its
    width and the tree a height of (base mesh height) x diameter. X = x (east), Z = y (south), Y up.

    Args:
        trees: the trees (metres).
        mesh: the normalised base mesh.

    Returns:
        (K, V, 3) float64 metres.
    """
    if not trees:
        return np.zeros((0, len(mesh.positions), 3))
    rot = _rotations()[[rotation_step(t.id) for t in trees]]  # (K, 3, 3)
    size = np.array([t.diameter for t in trees])[:, None, None]
    shift = np.array([[t.x, 0.0, t.y] for t in trees])[:, None, :]
    placed: np.ndarray = np.einsum("kij,vj->kvi", rot, mesh.positions) * size + shift
    return placed


def _corner_format(mesh: Mesh) -> str:
    has_vt, has_vn = bool((mesh.corners[:, :, 1] >= 0).all()), bool((mesh.corners[:, :, 2] >= 0).all())
    if has_vt and has_vn:
        return "%d/{vt}/%d"
    if has_vn:
        return "%d//%d"
    if has_vt:
        return "%d/{vt}"
    return "%d"


def _face_block(mesh: Mesh) -> tuple[str, np.ndarray, bool]:
    # One tree's face lines as a %-template (vertex and normal numbers left open, texcoords baked in).
    corner = _corner_format(mesh)
    with_normals = corner.count("%d") == 2
    lines, order = [], []
    for material in range(len(mesh.material_names)):
        chosen = np.nonzero(mesh.materials == material)[0]
        if chosen.size == 0:
            continue
        lines.append(f"usemtl {mesh.material_names[material]}\n")
        for face in chosen:
            cells = [corner.format(vt=int(vt) + 1) for _, vt, _ in mesh.corners[face]]
            lines.append("f " + " ".join(cells) + "\n")
            order.append(face)
    return "".join(lines), np.array(order, np.int64), with_normals


def obj_header(mesh: Mesh, *, mtl_name: str) -> bytes:
    """The scene's first lines: comment, `mtllib`, the shared texcoords and the rotated normals.

    Args:
        mesh: the normalised base mesh.
        mtl_name: the MTL file name written next to the OBJ.

    Returns:
        UTF-8 bytes.
    """
    parts = [
        f"# Tree scene: base mesh {mesh.name}, one object per tree. X east, Y up, Z south; metres.\n",
        f"mtllib {mtl_name}\n",
    ]
    if len(mesh.texcoords):
        parts.append(("vt %.4f %.4f\n" * len(mesh.texcoords)) % tuple(mesh.texcoords.ravel().tolist()))
    if len(mesh.normals):
        turned = np.einsum("kij,nj->kni", _rotations(), mesh.normals).reshape(-1)
        parts.append(("vn %.4f %.4f %.4f\n" * (len(mesh.normals) * ROTATION_STEPS)) % tuple(turned.tolist()))
    return "".join(parts).encode()


def format_obj_part(trees: Sequence[Tree], mesh: Mesh, *, first_index: int) -> bytes:
    """The OBJ lines of a range of trees, independent of every other range.

    Args:
        trees: the trees of this part, in scene order.
        mesh: the normalised base mesh.
        first_index: the scene position of trees[0] (0-based): its vertices start at
            first_index * V + 1.

    Returns:
        UTF-8 bytes: per tree an `o tree_<id>` object, its vertices and its faces.
    """
    if not trees:
        return b""
    n_vertices, n_normals = len(mesh.positions), len(mesh.normals)
    faces, order, with_normals = _face_block(mesh)
    vertex_block = "v %.3f %.3f %.3f\n" * n_vertices
    positions = placed_positions(trees, mesh).reshape(len(trees), -1)
    corner_v = mesh.corners[order, :, 0].reshape(-1)
    corner_vn = mesh.corners[order, :, 2].reshape(-1)
    chunks = []
    for k, tree in enumerate(trees):
        v = corner_v + (first_index + k) * n_vertices + 1
        if with_normals:
            vn = corner_vn + rotation_step(tree.id) * n_normals + 1
            numbers = np.stack([v, vn], axis=1).reshape(-1)
        else:
            numbers = v
        chunks.append(f"o tree_{tree.id}\n")
        chunks.append(vertex_block % tuple(positions[k].tolist()))
        chunks.append(faces % tuple(numbers.tolist()))
    return "".join(chunks).encode()


def iter_obj_parts(
    trees: Sequence[Tree], mesh: Mesh, *, mtl_name: str, trees_per_part: int = TREES_PER_PART
) -> Iterator[bytes]:
    """The whole scene as consecutive byte parts (the first is the header), formatted one at a time.

    Args:
        trees: every tree of the scene.
        mesh: the normalised base mesh.
        mtl_name: the MTL file name.
        trees_per_part: trees per part (memory grows with this, not with the scene).

    Yields:
        Bytes to concatenate in order.
    """
    yield obj_header(mesh, mtl_name=mtl_name)
    for start in range(0, len(trees), trees_per_part):
        yield format_obj_part(trees[start : start + trees_per_part], mesh, first_index=start)


def default_mtl(mesh: Mesh) -> str:
    """An MTL with a plain grey-green material for each material the mesh uses (when it brings none).

    Args:
        mesh: the base mesh.

    Returns:
        MTL text.
    """
    return "".join(f"newmtl {name}\nKd 0.300 0.450 0.250\nillum 1\n\n" for name in mesh.material_names)


def write_obj(path: str | os.PathLike[str], trees: Sequence[Tree], mesh: Mesh, *, mtl_text: str) -> tuple[Path, Path]:
    """Write scene.obj and scene.mtl next to each other, each atomically (temp file, then rename).

    Args:
        path: the .obj path; the MTL takes the same name with .mtl.
        trees: the trees.
        mesh: the normalised base mesh.
        mtl_text: the materials.

    Returns:
        (obj path, mtl path). On error nothing is left behind.
    """
    obj_path = Path(path)
    mtl_path = obj_path.with_suffix(".mtl")
    temps = []
    try:
        for target, parts in (
            (mtl_path, iter([mtl_text.encode()])),
            (obj_path, iter_obj_parts(trees, mesh, mtl_name=mtl_path.name)),
        ):
            fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
            temps.append(temp)
            with os.fdopen(fd, "wb") as handle:
                for part in parts:
                    handle.write(part)
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temps[0], mtl_path)
        os.replace(temps[1], obj_path)
    except BaseException:
        for temp in temps:
            Path(temp).unlink(missing_ok=True)
        raise
    return obj_path, mtl_path
