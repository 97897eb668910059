"""Merged OBJ scenes: one base mesh placed, scaled and turned per tree, written in independent parts.

Every tree has the same vertex count and its faces follow its own vertices, so faces use relative (negative)
indices: a part (a range of trees) is formatted without knowing where it lands, in parallel if the caller
likes, and parts are concatenated in order. Texture coordinates are written once and shared; normals once per
rotation step, so a tree's face text is one of ROTATION_STEPS precomputed strings.
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


def _face_texts(mesh: Mesh) -> list[str]:
    """One tree's `usemtl` and face lines per rotation step, with relative (negative) indices.

    A tree's faces follow its own vertices, so vertex -V is its first vertex whatever its place in the scene;
    normals are all written in the header, so a rotation step's normals have fixed negative indices too.
    The face text of every tree is therefore one of ROTATION_STEPS strings: no per-tree formatting at all.
    """
    corner = _corner_format(mesh)
    n_vertices, n_normals = len(mesh.positions), len(mesh.normals)
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
    template = "".join(lines)
    faces = np.array(order, np.int64)
    v = mesh.corners[faces, :, 0].reshape(-1) - n_vertices
    if not with_normals:
        return [template % tuple(v.tolist())]
    vn = mesh.corners[faces, :, 2].reshape(-1)
    texts = []
    for step in range(ROTATION_STEPS):
        vn_relative = vn + step * n_normals - ROTATION_STEPS * n_normals
        texts.append(template % tuple(np.stack([v, vn_relative], axis=1).reshape(-1).tolist()))
    return texts


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


def _digit_counts(values: np.ndarray) -> np.ndarray:
    # Decimal digits of non-negative integers (0 has one digit).
    counts = np.ones(values.shape, np.int64)
    power = 10
    while power <= max(int(values.max(initial=0)), 9) and power < 10**18:
        counts += values >= power
        power *= 10
    return counts


def vertex_lines(positions: np.ndarray) -> tuple[bytes, np.ndarray]:
    """`v x y z` lines with 3 decimals, formatted with numpy (no per-number Python work).

    The same text as "%.3f" (a value exactly half-way between two thousandths may round the other way).

    Args:
        positions: (N, 3) float64 metres, finite.

    Returns:
        (ASCII text of N lines, (N,) int64 byte offset of each line).
    """
    thousandths = np.rint(positions * 1000.0).astype(np.int64).reshape(-1)
    negative = np.signbit(positions).reshape(-1)  # like "%.3f": -0.0001 is "-0.000"
    magnitude = np.abs(thousandths)
    whole, frac = np.divmod(magnitude, 1000)
    digits = _digit_counts(whole)
    widths = (negative + digits + 4).reshape(-1, 3)  # [-]d+.ddd
    line_lengths = widths.sum(axis=1) + 5  # "v " + 2 spaces + "\n"
    line_starts = np.zeros(len(widths), np.int64)
    np.cumsum(line_lengths[:-1], out=line_starts[1:])
    # Byte offset of the last character of each number: "v " then the numbers separated by one space.
    ends = (line_starts[:, None] + 1 + np.cumsum(widths + 1, axis=1) - 1).reshape(-1)
    out = np.full(int(line_lengths.sum()), ord(" "), np.uint8)
    out[line_starts] = ord("v")
    out[line_starts + line_lengths - 1] = ord("\n")
    zero = ord("0")
    out[ends] = zero + frac % 10
    out[ends - 1] = zero + frac // 10 % 10
    out[ends - 2] = zero + frac // 100
    out[ends - 3] = ord(".")
    out[ends - 4] = zero + whole % 10
    remaining, place = whole // 10, 5
    for more in range(1, int(digits.max(initial=1))):
        chosen = digits > more
        out[ends[chosen] - place] = zero + remaining[chosen] % 10
        remaining //= 10
        place += 1
    out[(ends - 4 - digits)[negative]] = ord("-")
    return out.tobytes(), line_starts


def format_obj_part(trees: Sequence[Tree], mesh: Mesh) -> bytes:
    """The OBJ lines of a range of trees, independent of every other range and of its place in the scene.

    Faces use relative (negative) indices, which the OBJ format defines and every reader we test resolves:
    the same tree gives the same text wherever it stands, so parts need no offsets at all.

    Args:
        trees: the trees of this part, in scene order.
        mesh: the normalised base mesh.

    Returns:
        UTF-8 bytes: per tree an `o tree_<id>` object, its vertices and its faces.
    """
    if not trees:
        return b""
    face_texts = [text.encode() for text in _face_texts(mesh)]
    n_vertices = len(mesh.positions)
    positions = placed_positions(trees, mesh).reshape(-1, 3)
    text, line_starts = vertex_lines(positions)
    bounds = line_starts[::n_vertices].tolist() + [len(text)]
    view = memoryview(text)
    chunks: list[bytes | memoryview] = []
    for k, tree in enumerate(trees):
        chunks.append(b"o tree_%d\n" % tree.id)
        chunks.append(view[bounds[k] : bounds[k + 1]])
        chunks.append(face_texts[rotation_step(tree.id) if len(face_texts) > 1 else 0])
    return b"".join(chunks)


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
        yield format_obj_part(trees[start : start + trees_per_part], mesh)


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
