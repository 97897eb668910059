"""Merged OBJ scenes: one base mesh placed, scaled and turned per tree, written in independent parts.

Every tree has the same vertex count, so the vertex offset of any range of trees is known before it is
written: parts are formatted independently (in parallel, if the caller likes) and concatenated in order.
Texture coordinates are written once and shared; normals once per rotation step, so only a face's vertex
numbers vary from tree to tree (absolute indices: some readers, trimesh among them, resolve negative ones
against the end of the file instead of the current position).
"""

from __future__ import annotations

import functools
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


def rotation_steps(tree_ids: np.ndarray) -> np.ndarray:
    """`rotation_step` of many ids at once.

    Args:
        tree_ids: (K,) int64 ids (below 2**53).

    Returns:
        (K,) int64 steps in [0, ROTATION_STEPS).
    """
    hashed = (tree_ids.astype(np.uint64) * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    return ((hashed * np.uint64(ROTATION_STEPS)) >> np.uint64(32)).astype(np.int64)


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
    table = np.array([(t.id, t.x, t.y, t.diameter) for t in trees], np.float64)
    rot = _rotations()[rotation_steps(table[:, 0].astype(np.int64))]  # (K, 3, 3)
    shift = np.zeros((len(trees), 1, 3))
    shift[:, 0, 0], shift[:, 0, 2] = table[:, 1], table[:, 2]
    placed: np.ndarray = np.einsum("kij,vj->kvi", rot, mesh.positions) * table[:, 3, None, None] + shift
    return placed


_TEMPLATE_CACHE: dict[int, tuple[Mesh, tuple[list[str], np.ndarray]]] = {}


def _cached_face_templates(mesh: Mesh) -> tuple[list[str], np.ndarray]:
    # Parts of one scene share the mesh object: make its templates once (a few ms each time otherwise).
    cached = _TEMPLATE_CACHE.get(id(mesh))
    if cached is None or cached[0] is not mesh:
        if len(_TEMPLATE_CACHE) > 16:
            _TEMPLATE_CACHE.clear()
        cached = _TEMPLATE_CACHE[id(mesh)] = (mesh, _face_templates(mesh))
    return cached[1]


@functools.lru_cache(maxsize=1024)
def _row_layout(template: str, width: int) -> tuple[bytes, np.ndarray]:
    # A template's text with every "%d" slot as `width` zeros, and the column of each slot's first digit.
    pieces = template.split("%d")
    lengths = np.array([len(p) for p in pieces[:-1]], np.int64)
    return ("0" * width).join(pieces).encode(), np.cumsum(lengths) + np.arange(len(lengths)) * width


def _face_templates(mesh: Mesh) -> tuple[list[str], np.ndarray]:
    """One tree's `usemtl` and face lines as %-templates, one per rotation step, and their vertex corners.

    Normals are all in the header, so a rotation step's normal numbers are fixed and baked into its template;
    texture coordinates are shared and baked too. Only the vertex numbers (absolute, 1-based) are left open.

    Returns:
        (templates, corners): ROTATION_STEPS templates (one when the mesh has no normals) and the (C,)
        0-based base-mesh vertex of each open slot, in order.
    """
    has_vt = bool((mesh.corners[:, :, 1] >= 0).all())
    has_vn = bool((mesh.corners[:, :, 2] >= 0).all())
    n_normals = len(mesh.normals)
    steps = ROTATION_STEPS if has_vn else 1
    lines: list[list[str]] = [[] for _ in range(steps)]
    corners: list[int] = []
    for material in range(len(mesh.material_names)):
        chosen = np.nonzero(mesh.materials == material)[0]
        if chosen.size == 0:
            continue
        for step in range(steps):
            lines[step].append(f"usemtl {mesh.material_names[material]}\n")
        for face in chosen:
            for step in range(steps):
                cells = []
                for _, vt, vn in mesh.corners[face]:
                    cell = "%d"
                    if has_vt or has_vn:
                        cell += f"/{int(vt) + 1}" if has_vt else "/"
                    if has_vn:
                        cell += f"/{int(vn) + step * n_normals + 1}"
                    cells.append(cell)
                lines[step].append("f " + " ".join(cells) + "\n")
            corners.extend(int(v) for v in mesh.corners[face, :, 0])
    return ["".join(step_lines) for step_lines in lines], np.array(corners, np.int64)


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
    Each number is written right-aligned into a fixed-width field padded with NUL bytes, column by column;
    one boolean compaction then drops the padding.

    Args:
        positions: (N, 3) float64 metres, finite.

    Returns:
        (ASCII text of N lines, (N,) int64 byte offset of each line).
    """
    thousandths = np.rint(positions * 1000.0).astype(np.int64)
    negative = np.ascontiguousarray(np.signbit(positions).T)  # like "%.3f": -0.0001 is "-0.000"
    whole, frac = (np.ascontiguousarray(part.T) for part in np.divmod(np.abs(thousandths), 1000))
    digits = _digit_counts(whole)
    field = int(digits.max(initial=1)) + 5  # sign, digits, ".", 3 decimals
    line = 1 + 3 * (field + 1) + 1  # "v", then " " + field per number, then "\n"
    pad, zero = 0, ord("0")
    # Built column-major (one contiguous row per text column): writing a column is then a fast contiguous copy.
    columns = np.full((line, len(positions)), pad, np.uint8)
    columns[0] = ord("v")
    columns[-1] = ord("\n")
    for axis in range(3):
        end = 1 + (axis + 1) * (field + 1) - 1  # column of the last decimal
        columns[end - field] = ord(" ")
        rest = frac[axis]
        for place in range(3):
            columns[end - place] = zero + rest % 10
            rest = rest // 10
        columns[end - 3] = ord(".")
        rest, count, sign = whole[axis], digits[axis], negative[axis]
        for place in range(field - 5 + 1):
            # A digit where the number still has one, "-" just before its first digit, else padding.
            is_digit = (count > place).view(np.uint8)
            is_minus = (sign & (count == place)).view(np.uint8)
            columns[end - 4 - place] = is_digit * (zero + (rest % 10).astype(np.uint8)) + is_minus * ord("-")
            rest = rest // 10
    matrix = np.ascontiguousarray(columns.T)
    kept = matrix != pad
    lengths = kept.sum(axis=1)
    starts = np.zeros(len(positions), np.int64)
    np.cumsum(lengths[:-1], out=starts[1:])
    return matrix[kept].tobytes(), starts


def _digit_text(numbers: np.ndarray, widths: np.ndarray, ends: np.ndarray, out: np.ndarray) -> None:
    # Write non-negative integers right-aligned so that their last digit lands at `ends` (all same shape).
    remaining = numbers.copy()
    for place in range(int(widths.max(initial=1))):
        chosen = widths > place
        out[(ends - place)[chosen]] = ord("0") + remaining[chosen] % 10
        remaining //= 10


def _face_rows(templates: list[str], corners: np.ndarray, bases: np.ndarray, steps: np.ndarray) -> list[bytes]:
    """Every tree's face text: templates[steps[k]] with its "%d" slots filled by bases[k] + corners.

    Trees that share a template and whose vertex numbers all have the same digit count share one row layout:
    their rows are one (n, row length) byte matrix, copied from the template and with the digit columns
    written by numpy. The rare tree whose numbers cross a power of ten is formatted with "%".

    Args:
        templates: S templates with the same number C of "%d" slots.
        corners: (C,) int64 offset of each slot's number from the tree's base.
        bases: (K,) int64 number of each tree's first vertex.
        steps: (K,) template of each tree.

    Returns:
        K byte strings.
    """
    rows: list[bytes] = [b""] * len(bases)
    low, high = _digit_counts(bases + corners.min()), _digit_counts(bases + corners.max())
    for k in np.nonzero(low != high)[0].tolist():
        rows[k] = (templates[steps[k]] % tuple((bases[k] + corners).tolist())).encode()
    uniform = np.nonzero(low == high)[0]
    keys = steps[uniform] * 100 + low[uniform]
    for key in np.unique(keys).tolist():
        members = uniform[keys == key]
        step, width = divmod(key, 100)
        row, slot_starts = _row_layout(templates[step], width)
        matrix = np.tile(np.frombuffer(row, np.uint8), (len(members), 1))
        numbers = bases[members][:, None] + corners[None, :]
        for place in range(width):
            matrix[:, slot_starts + width - 1 - place] = ord("0") + numbers % 10
            numbers //= 10
        block = matrix.tobytes()
        for j, k in enumerate(members.tolist()):
            rows[k] = block[j * len(row) : (j + 1) * len(row)]
    return rows


def format_obj_part(trees: Sequence[Tree], mesh: Mesh, *, first_index: int) -> bytes:
    """The OBJ lines of a range of trees, independent of every other range.

    Args:
        trees: the trees of this part, in scene order.
        mesh: the normalised base mesh.
        first_index: the scene position of trees[0] (0-based): its vertices are numbered from
            first_index * V + 1 (absolute indices, which every OBJ reader resolves the same way).

    Returns:
        UTF-8 bytes: per tree an `o tree_<id>` object, its vertices and its faces.
    """
    if not trees:
        return b""
    templates, corners = _cached_face_templates(mesh)
    n_vertices = len(mesh.positions)
    positions = placed_positions(trees, mesh).reshape(-1, 3)
    text, line_starts = vertex_lines(positions)
    bounds = line_starts[::n_vertices].tolist() + [len(text)]
    view = memoryview(text)
    bases = np.arange(first_index, first_index + len(trees), dtype=np.int64) * n_vertices + 1
    ids = np.array([t.id for t in trees], np.int64)
    steps = rotation_steps(ids) if len(templates) > 1 else np.zeros(len(trees), np.int64)
    faces = _face_rows(templates, corners, bases, steps)
    chunks: list[bytes | memoryview] = []
    for k, tree_id in enumerate(ids.tolist()):
        chunks.append(b"o tree_%d\n" % tree_id)
        chunks.append(view[bounds[k] : bounds[k + 1]])
        chunks.append(faces[k])
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
